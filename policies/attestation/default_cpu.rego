# Cloister default attestation (appraisal) policy for CPU TEEs.
#
# Produces AR4SI trust claims from verified TEE claims (input.snp / input.tdx / input.se) and
# reference values (data.reference, RVPS names). It starts pessimistic, as trustee's default does:
# a guest with no provisioned reference values is never affirmed.
#
#   executables   3 when the launch measurement (SNP) or MRTD + RTMR1 + RTMR2 (TDX) are listed,
#                 33 otherwise
#   hardware      2 when the TCB is at least every minimum listed (no list: no constraint),
#                 97 otherwise
#   configuration 2 when the guest is not debuggable and, if the evidence is bound to initdata,
#                 its HOST_DATA / MRCONFIGID equals that digest, and that digest is listed under
#                 `init_data` when the tenant lists any; 36 otherwise
#
# Evidence from the emulated TEE, CoCo's `sample` TEE or no TEE (`none`) matches none of these
# rules and stays at the pessimistic defaults.
package policy

import rego.v1

default executables := 33

default hardware := 97

default configuration := 36

# A listed reference value, or true when nothing is listed under that name.
listed_or_unset(name, value) if {
	not data.reference[name]
}

listed_or_unset(name, value) if {
	value in data.reference[name]
}

# value >= every minimum listed under name (as numbers), or no minimum listed.
at_least(name, value) if {
	not data.reference[name]
}

at_least(name, value) if {
	every m in data.reference[name] {
		to_number(value) >= to_number(m)
	}
}

# The tenant's initdata (agent policy, key broker): when digests are listed under `init_data`,
# the guest must present one of them (and be bound to it, below). A host that launches the guest
# with other initdata — say, a permissive agent policy — is not affirmed.
initdata_approved if not data.reference.init_data

initdata_approved if input.init_data in data.reference.init_data

# --- SEV-SNP ---------------------------------------------------------------------------------

executables := 3 if {
	input.snp.measurement in data.reference.snp_launch_measurement
}

hardware := 2 if {
	input.snp
	at_least("snp_bootloader", input.snp.reported_tcb_bootloader)
	at_least("snp_tee_svn", input.snp.reported_tcb_tee)
	at_least("snp_snp_svn", input.snp.reported_tcb_snp)
	at_least("snp_microcode", input.snp.reported_tcb_microcode)
}

configuration := 2 if {
	input.snp
	not snp_debuggable
	snp_bound_to_initdata
	initdata_approved
	listed_or_unset("snp_smt_enabled", input.snp.platform_smt_enabled)
	listed_or_unset("snp_tsme_enabled", input.snp.platform_tsme_enabled)
	listed_or_unset("snp_single_socket", input.snp.policy_single_socket)
}

snp_debuggable if {
	input.snp.policy_debug_allowed in {true, "1", 1}
}

snp_bound_to_initdata if {
	not input.init_data
}

# HOST_DATA holds the initdata digest truncated to 32 bytes.
snp_bound_to_initdata if {
	startswith(input.init_data, input.snp.host_data)
}

# --- TDX -------------------------------------------------------------------------------------

executables := 3 if {
	input.tdx.mr_td in data.reference.mr_td
	tdx_rtmr_1_ok
	tdx_rtmr_2_ok
}

tdx_rtmr_1_ok if not data.reference.rtmr_1

tdx_rtmr_1_ok if input.tdx.rtmr_1 in data.reference.rtmr_1

tdx_rtmr_2_ok if not data.reference.rtmr_2

tdx_rtmr_2_ok if input.tdx.rtmr_2 in data.reference.rtmr_2

hardware := 2 if {
	input.tdx
	input.tdx.tcb_status in {"UpToDate", "SWHardeningNeeded"}
}

configuration := 2 if {
	input.tdx
	input.tdx.td_attributes.debug == false
	tdx_xfam_ok
	tdx_bound_to_initdata
	initdata_approved
}

tdx_xfam_ok if not data.reference.xfam

tdx_xfam_ok if input.tdx.xfam in data.reference.xfam

tdx_bound_to_initdata if not input.init_data

# MRCONFIGID holds the digest zero-padded (SHA-256) or truncated (SHA-512) to 48 bytes.
tdx_bound_to_initdata if startswith(input.tdx.mr_config_id, input.init_data)

tdx_bound_to_initdata if startswith(input.init_data, input.tdx.mr_config_id)

# --- IBM Secure Execution --------------------------------------------------------------------
# The key broker encrypted the attestation request only to host-key documents that chain to IBM,
# and the Ultravisor's HMAC over the image's header tags verified: the image is the one whose
# tag the tenant lists (RVPS `se.tag`), unpacked with a listed host key (`se.image_phkh`).

executables := 3 if {
	input.se["se.tag"] in data.reference["se.tag"]
	listed_or_unset("se.image_phkh", input.se["se.image_phkh"])
}

hardware := 2 if {
	input.se
	listed_or_unset("se.attestation_phkh", input.se["se.attestation_phkh"])
}

# SE images cannot be debugged, but SE evidence carries no initdata digest: a guest that
# presents initdata is not affirmed until the user data binds it.
configuration := 2 if {
	input.se
	not input.init_data
}
