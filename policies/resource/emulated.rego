# Cloister resource policy for development with the EMULATED TEE.
#
# Like `affirming`, but states its trust explicitly: releases a resource to a token whose every
# submodule is `affirming` and whose evidence is real hardware or the emulated TEE (which the key
# broker only accepts when its configuration names the emulated root). CoCo's `sample` TEE and
# `none` evidence are denied. Never use where real secrets live.
package policy

import rego.v1

default allow := false

untrusted := {"sample", "none"}

allow if {
	data.plugin == "resource"
	count(input.submods) > 0
	every _, sub in input.submods {
		sub["ear.status"] == "affirming"
		every tee, _ in sub["ear.veraison.annotated-evidence"] {
			not tee in untrusted
		}
	}
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
	tee in untrusted
	msg := sprintf("submodule %v carries %v evidence", [name, tee])
}
