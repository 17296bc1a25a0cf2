# Agent policy `confidential`: the host is untrusted, so the guest runs only what this policy
# names. Every rule defaults to false; a request the policy has no rule for is refused.
#
# The allow-lists come from the data document `data.policy_data` (the agent's `--policy-data`
# JSON file, later initdata), or can be written into a copy of this file:
#
#   {
#     "allowed_images": ["registry.example/app@sha256:…", "busybox"],
#     "allowed_env":    ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=.*"],
#     "allowed_commands": [["/bin/server", "--port", "8080"]]
#   }
#
# `allowed_images` are exact image references; `allowed_env` entries are regular expressions that
# must match a whole `NAME=value` string; `allowed_commands`, when present, lists the exact argv
# vectors a container may run (absent: any command of an allowed image). Refused: ExecProcess (no way into a running container),
# images and environment variables not listed, mounts other than the standard kernel filesystems,
# storages other than the image pulled by the guest, terminals, a sandbox-wide PID namespace.
package agent_policy

import rego.v1

# (Not object.get(data, …): reading the whole data document would include this package.)
default policy_data := {}

policy_data := data.policy_data

allowed_images := object.get(policy_data, "allowed_images", [])

allowed_env := object.get(policy_data, "allowed_env", [])

default CreateContainerRequest := false

CreateContainerRequest if {
	valid_id(input.container_id)
	not input.sandbox_pidns
	image_allowed
	every s in input.storages {
		s.driver == "image_guest_pull"
	}
	process := input.OCI.Process
	not process.Terminal
	count(process.Args) > 0
	command_allowed(process.Args)
	every e in process.Env {
		env_allowed(e)
	}
	every m in input.OCI.Mounts {
		standard_mount(m)
	}
}

# The image: the single guest-pull storage, else the CRI image-name annotation (as the agent).
image_allowed if {
	pulls := [s.source | some s in input.storages; s.driver == "image_guest_pull"]
	count(pulls) == 1
	pulls[0] in allowed_images
}

image_allowed if {
	count([s | some s in input.storages; s.driver == "image_guest_pull"]) == 0
	input.OCI.Annotations["io.kubernetes.cri.image-name"] in allowed_images
}

command_allowed(_) if not policy_data.allowed_commands

command_allowed(args) if {
	some allowed in policy_data.allowed_commands
	allowed == args
}

env_allowed(e) if {
	some pattern in allowed_env
	regex.match(concat("", ["^(?:", pattern, ")$"]), e)
}

# Kernel filesystems at their usual places: nothing from the host, no bind mounts.
standard_mounts := {
	"/proc": "proc",
	"/dev": "tmpfs",
	"/dev/pts": "devpts",
	"/dev/shm": "tmpfs",
	"/dev/mqueue": "mqueue",
	"/run": "tmpfs",
	"/sys": "sysfs",
	"/sys/fs/cgroup": "cgroup",
}

standard_mount(m) if {
	standard_mounts[m.destination] == m.type
}

standard_mount(m) if {
	m.destination == "/sys/fs/cgroup"
	m.type == "cgroup2"
}

valid_id(id) if regex.match(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`, id)

default StartContainerRequest := false

StartContainerRequest if valid_id(input.container_id)

# No way into a running container: the host could read or change anything in it.
default ExecProcessRequest := false

default WaitProcessRequest := true

default SignalProcessRequest := true

# Stdio of the workload goes to the host (logs), as in Kata's confidential policies.
default ReadStreamRequest := true

default WriteStreamRequest := true

default CloseStdinRequest := true

default RemoveContainerRequest := true

default StatsContainerRequest := true

default DestroySandboxRequest := true

# Step durations and counters only (no workload data), as Kata allows by default.
default GetMetricsRequest := true
