# Releases a resource when the token has at least one submodule and every submodule's appraisal
# status is `affirming` (as trustee's `affirming` policy does).
package policy

import rego.v1

default allow := false

allow if {
	count(input.submods) > 0
	every _, sub in input.submods {
		sub["ear.status"] == "affirming"
	}
}
