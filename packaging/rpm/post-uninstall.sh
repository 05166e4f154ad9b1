# medic-agent %postun ($1: 0 = erase, 1 = upgrade); what %systemd_postun_with_restart would
# do. On erase the user medic-agent and /var/lib/medic-agent stay (RPM never deletes system
# users), and a modified agent.toml is kept as agent.toml.rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart medic-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
