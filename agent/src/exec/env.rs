//! The environment a script gets: only [`BASE_ENV`], the configured `pass_env` names and the
//! `MEDIC_*` variables, and the account it runs as ([`RunAs`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use medic_protocol::RunRequest;

use super::{ExecSettings, Executor};

/// The variables a script inherits from the agent's environment when they are set there.
pub const BASE_ENV: [&str; 6] = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ"];

/// The account scripts run as, resolved from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name.
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The home directory.
    pub home: PathBuf,
}

impl RunAs {
    /// Finds `name` in the text of an `/etc/passwd` file.
    pub fn from_passwd(name: &str, passwd: &str) -> Option<Self> {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 7 || fields[0] != name {
                return None;
            }
            Some(Self {
                name: name.to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: PathBuf::from(fields[5]),
            })
        })
    }

    /// Decides whose account scripts run as. `can_switch` says whether the agent holds
    /// `CAP_SETUID` and `CAP_SETGID` without being root (see [`switching_capabilities`]).
    ///
    /// An agent that can switch users (root, or the packaged unit's capabilities) needs
    /// `run_as`, never root: scripts then run as that separate account, which cannot read the
    /// agent's memory, environment, credential or run-id journal. An agent that cannot switch
    /// runs scripts as its own user, and `run_as`, if set, must name it. `Ok(None)` means "do
    /// not switch".
    pub fn resolve(
        run_as: Option<&str>,
        euid: u32,
        can_switch: bool,
        passwd: &str,
    ) -> Result<Option<Self>, String> {
        let account = match run_as {
            None if euid == 0 => {
                return Err(
                    "the agent runs as root and run_as is not set; refusing to run scripts as root"
                        .to_owned(),
                );
            }
            None if can_switch => {
                return Err(
                    "the agent can switch users (CAP_SETUID, CAP_SETGID) and run_as is \
                     not set; set run_as to the account scripts run as (the packages create \
                     medic-run)"
                        .to_owned(),
                );
            }
            None => return Ok(None),
            Some(name) => Self::from_passwd(name, passwd)
                .ok_or_else(|| format!("run_as user {name:?} does not exist"))?,
        };
        match (euid, account.uid) {
            (_, 0) => Err(format!(
                "run_as user {:?} is root; scripts must run unprivileged",
                account.name
            )),
            (me, them) if me == them => Ok(None),
            (0, _) => Ok(Some(account)),
            _ if can_switch => Ok(Some(account)),
            _ => Err(format!(
                "run_as user {:?} needs the agent to start as root or with the capabilities \
                 CAP_SETUID and CAP_SETGID (the packaged systemd unit grants them)",
                account.name
            )),
        }
    }
}

/// Whether this process holds `CAP_SETUID` and `CAP_SETGID` (effective) without being root:
/// the packaged unit's ambient capabilities.
#[cfg(target_os = "linux")]
pub fn switching_capabilities() -> bool {
    use rustix::thread::{CapabilitySet, capabilities};
    let wanted = CapabilitySet::SETUID | CapabilitySet::SETGID;
    rustix::process::geteuid().as_raw() != 0
        && capabilities(None).is_ok_and(|sets| sets.effective.contains(wanted))
}

#[cfg(not(target_os = "linux"))]
pub fn switching_capabilities() -> bool {
    false
}

/// Hardens the agent process itself; call it first, before any thread starts (capabilities and
/// groups are per thread, and threads inherit them from the one that creates them).
///
/// - Descriptors inherited from the agent's parent are marked close-on-exec, so that no script
///   inherits them.
/// - The agent is made non-dumpable: no process of its own user (a script run without
///   `run_as`, say) can read `/proc/<agent>/environ` or `mem`, or attach a debugger.
/// - With [`switching_capabilities`], the agent keeps `CAP_SETUID` and `CAP_SETGID` only in
///   its effective and permitted sets: the ambient and inheritable sets are cleared so that no
///   script inherits them through `exec`, and the supplementary groups the service manager
///   gave it are dropped so that no script keeps them after switching (the standard library
///   drops them only when the agent is root).
#[cfg(target_os = "linux")]
pub fn harden_process() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    use rustix::thread::{
        CapabilitySet, capabilities, clear_ambient_capability_set, set_capabilities,
        set_thread_groups,
    };
    super::descriptors::close_on_exec_inherited()?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    if switching_capabilities() {
        clear_ambient_capability_set()?;
        let mut sets = capabilities(None)?;
        sets.inheritable = CapabilitySet::empty();
        set_capabilities(None, sets)?;
        set_thread_groups(&[])?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn harden_process() -> std::io::Result<()> {
    Ok(())
}

impl Executor {
    /// The script's whole environment.
    pub(super) fn script_env(
        &self,
        settings: &ExecSettings,
        request: &RunRequest,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let passed = BASE_ENV
            .iter()
            .copied()
            .chain(settings.pass_env.iter().map(String::as_str));
        for name in passed {
            if let Some(value) = self.inner.parent_env.get(name) {
                env.insert(name.to_owned(), value.clone());
            }
        }
        if let Some(account) = &settings.run_as {
            env.insert(
                "HOME".to_owned(),
                account.home.to_string_lossy().into_owned(),
            );
            env.insert("USER".to_owned(), account.name.clone());
        }
        env.insert("MEDIC_RUN_ID".to_owned(), request.run_id.to_string());
        env.insert("MEDIC_SCRIPT".to_owned(), request.script.clone());
        env.insert("MEDIC_AGENT_ID".to_owned(), settings.agent_id.to_string());
        for (name, value) in &request.parameters {
            env.insert(format!("MEDIC_PARAM_{name}"), value.clone());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        medic:x:998:997::/var/lib/medic-agent:/usr/sbin/nologin\n\
        broken:x:notanumber:1::/:/bin/sh\n";

    #[test]
    fn passwd_lookup() {
        let medic = RunAs::from_passwd("medic", PASSWD).unwrap();
        assert_eq!((medic.uid, medic.gid), (998, 997));
        assert_eq!(medic.home, PathBuf::from("/var/lib/medic-agent"));
        assert_eq!(RunAs::from_passwd("med", PASSWD), None);
        assert_eq!(RunAs::from_passwd("broken", PASSWD), None);
    }

    #[test]
    fn who_scripts_run_as() {
        assert!(
            RunAs::resolve(None, 0, false, PASSWD)
                .unwrap_err()
                .contains("root")
        );
        assert!(RunAs::resolve(Some("root"), 0, false, PASSWD).is_err());
        assert!(RunAs::resolve(Some("ghost"), 0, false, PASSWD).is_err());
        assert_eq!(
            RunAs::resolve(Some("medic"), 0, false, PASSWD)
                .unwrap()
                .unwrap()
                .uid,
            998
        );
        assert_eq!(RunAs::resolve(None, 998, false, PASSWD), Ok(None));
        assert_eq!(RunAs::resolve(Some("medic"), 998, false, PASSWD), Ok(None));
        assert!(RunAs::resolve(Some("nobody"), 998, false, PASSWD).is_err());
        // With CAP_SETUID and CAP_SETGID (the packaged unit), a separate account is required.
        assert!(
            RunAs::resolve(None, 998, true, PASSWD)
                .unwrap_err()
                .contains("run_as")
        );
        assert_eq!(
            RunAs::resolve(Some("nobody"), 998, true, PASSWD)
                .unwrap()
                .unwrap()
                .uid,
            65534
        );
        assert!(RunAs::resolve(Some("root"), 998, true, PASSWD).is_err());
    }
}
