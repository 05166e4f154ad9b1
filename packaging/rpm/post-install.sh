# medic-agent %post ($1: 1 = install, 2 = upgrade); what %systemd_post would do, except that
# the unit is enabled on first install rather than left to the preset. It is never started
# here: the shipped configuration is incomplete on purpose.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # The work directory (systemd's StateDirectory= makes it too), so that check-config run by
    # hand before the first start finds it.
    [ -d /var/lib/medic-agent ] ||
        install -d -m 0711 -o medic-agent -g medic-agent /var/lib/medic-agent || exit 1
    systemctl --no-reload enable medic-agent.service >/dev/null 2>&1 || :
    echo "medic-agent: installed and enabled, not started. Set server_url and the credential in"
    echo "  /etc/medic-agent/agent.toml, check with 'sudo -u medic-agent medic-agent check-config',"
    echo "  then run 'systemctl start medic-agent'."
fi
exit 0
