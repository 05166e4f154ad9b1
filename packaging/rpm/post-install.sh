# medic-agent %post ($1: 1 = install, 2 = upgrade); what %systemd_post would do, except that
# the unit is enabled on first install rather than left to the preset. It is never started
# here: the shipped configuration is incomplete on purpose.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Only root and the agent may look inside (the credential usually lives here).
    chgrp medic-agent /etc/medic-agent && chmod 0750 /etc/medic-agent || exit 1
    systemctl --no-reload enable medic-agent.service >/dev/null 2>&1 || :
    echo "medic-agent: installed and enabled, not started. Set server_url and the credential in"
    echo "  /etc/medic-agent/agent.toml, check with 'sudo -u medic-agent medic-agent check-config',"
    echo "  then run 'systemctl start medic-agent'."
fi
exit 0
