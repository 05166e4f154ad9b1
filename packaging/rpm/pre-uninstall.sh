# medic-agent %preun ($1: 0 = erase, 1 = upgrade); what %systemd_preun would do: on erase,
# stop and disable the unit. On upgrade the agent keeps running until %postun restarts it.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now medic-agent.service >/dev/null 2>&1 || :
fi
exit 0
