# medic-agent %pre ($1: 1 = install, 2 = upgrade). The user must exist before the files are
# laid down, because /etc/medic-agent and agent.toml belong to the group medic-agent. The
# package declares Requires(pre) on getent, groupadd and useradd; when they are missing all
# the same (rpm --nodeps), say plainly what is missing.
for tool in getent groupadd useradd; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "medic-agent: $tool is missing; install shadow-utils and retry" >&2; exit 1; }
done
getent group medic-agent >/dev/null || groupadd --system medic-agent || exit 1
getent passwd medic-agent >/dev/null || useradd --system --gid medic-agent \
    --home-dir /var/lib/medic-agent --no-create-home --shell /sbin/nologin \
    --comment "Medic agent" medic-agent || exit 1
# Scripts run as this separate user (run_as), never as the agent's.
getent group medic-run >/dev/null || groupadd --system medic-run || exit 1
getent passwd medic-run >/dev/null || useradd --system --gid medic-run \
    --home-dir /nonexistent --no-create-home --shell /sbin/nologin \
    --comment "Medic remediation scripts" medic-run || exit 1
exit 0
