# The degenerate, non-confidential policy: the plain Kata-style VM path, for development clusters.
#
# Accepts tokens whose evidence is `none` or CoCo's `sample` (no TEE, so no confidentiality against
# the host), but releases only what is explicitly non-confidential: resources in the `dev`
# repository. Everything else, e.g. image decryption keys, stays closed.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	data["resource-path"][0] == "dev"
	count(input.submods) > 0
}
