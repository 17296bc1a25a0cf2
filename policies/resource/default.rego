# Cloister default resource policy.
#
# Releases a resource only to a token whose every submodule is `affirming` and whose evidence came
# from real TEE hardware: tokens from CoCo's `sample` TEE, from no TEE (`none`, the degenerate
# plain-VM path) and from the emulated TEE are denied. Evaluated for each resource request with
# input = the token's claims and data = {"plugin", "resource-path", "query"}.
package policy

import rego.v1

default allow := false

not_hardware := {"sample", "none", "emulated_snp", "emulated_tdx", "emulated_se"}

allow if {
	data.plugin == "resource"
	count(input.submods) > 0
	every _, sub in input.submods {
		sub["ear.status"] == "affirming"
		every tee, _ in sub["ear.veraison.annotated-evidence"] {
			not tee in not_hardware
		}
	}
}

# Why a request is denied (the key broker reports these in the PolicyDeny detail).
deny_reasons contains msg if {
	data.plugin != "resource"
	msg := sprintf("plugin %v is not released by this policy", [data.plugin])
}

deny_reasons contains "the token has no submodules" if count(input.submods) == 0

deny_reasons contains msg if {
	some name, sub in input.submods
	sub["ear.status"] != "affirming"
	msg := sprintf("submodule %v is %v, not affirming", [name, sub["ear.status"]])
}

deny_reasons contains msg if {
	some name, sub in input.submods
	some tee, _ in sub["ear.veraison.annotated-evidence"]
	tee in not_hardware
	msg := sprintf("submodule %v carries %v evidence, which the default policy never trusts", [name, tee])
}
