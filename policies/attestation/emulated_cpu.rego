# Cloister attestation policy for the EMULATED TEE (development and CI only).
#
# Evidence signed by an emulated root is labelled `emulated_snp` / `emulated_tdx` / `emulated_se` by the key
# broker and never `snp` / `tdx`. This policy appraises it with the same reference values as
# real hardware (RVPS names `snp_launch_measurement`, `mr_td`, `rtmr_1`, `rtmr_2`), so that a
# development setup exercises the real measurement and initdata checks. Emulated evidence proves
# nothing about hardware: never install this policy where real secrets live.
package policy

import rego.v1

default executables := 33

default hardware := 97

default configuration := 36

executables := 3 if {
	input.emulated_snp.measurement in data.reference.snp_launch_measurement
}

executables := 3 if {
	input.emulated_tdx.mr_td in data.reference.mr_td
	rtmr_ok(1)
	rtmr_ok(2)
}

executables := 3 if {
	input.emulated_se["se.tag"] in data.reference["se.tag"]
}

rtmr_ok(i) if not data.reference[sprintf("rtmr_%d", [i])]

rtmr_ok(i) if input.emulated_tdx[sprintf("rtmr_%d", [i])] in data.reference[sprintf("rtmr_%d", [i])]

# The emulated platform has no real TCB; "hardware" only says the evidence verified under the
# emulated root that the key broker was told to trust.
hardware := 2 if input.emulated_snp

hardware := 2 if input.emulated_tdx

hardware := 2 if input.emulated_se

configuration := 2 if {
	input.emulated_snp
	not input.emulated_snp.policy_debug_allowed
	bound(input.emulated_snp.host_data)
	initdata_approved
}

configuration := 2 if {
	input.emulated_tdx
	input.emulated_tdx.td_attributes.debug == false
	bound(input.emulated_tdx.mr_config_id)
	initdata_approved
}

configuration := 2 if {
	input.emulated_se
	not input.init_data
}

bound(_) if not input.init_data

bound(field) if startswith(input.init_data, field)

bound(field) if startswith(field, input.init_data)

# The tenant's initdata digests (reference values `init_data`), when listed: see default_cpu.
initdata_approved if not data.reference.init_data

initdata_approved if input.init_data in data.reference.init_data
