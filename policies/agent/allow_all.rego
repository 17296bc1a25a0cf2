# Agent policy `allow_all`: the degenerate, non-confidential path (a plain Kata-style VM). Every
# request the agent implements is allowed, including ExecProcess into a running container. Never
# use it where the host is not trusted.
package agent_policy

import rego.v1

default CreateContainerRequest := true

default StartContainerRequest := true

default ExecProcessRequest := true

default WaitProcessRequest := true

default SignalProcessRequest := true

default ReadStreamRequest := true

default WriteStreamRequest := true

default CloseStdinRequest := true

default RemoveContainerRequest := true

default StatsContainerRequest := true

default DestroySandboxRequest := true

default GetMetricsRequest := true
