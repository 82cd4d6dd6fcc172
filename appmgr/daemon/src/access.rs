//! Who is calling: the caller's uid and groups come from the bus daemon
//! (`GetConnectionCredentials` on the sender's unique name), never from anything the
//! caller sends. Mutating methods are for root and members of the configured operator
//! group only.

use crate::error::Error;
use std::path::Path;

/// The caller as the bus daemon knows it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
    pub pid: Option<u32>,
}

pub async fn caller(
    conn: &zbus::Connection,
    hdr: &zbus::message::Header<'_>,
) -> Result<Caller, Error> {
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::AccessDenied("message without sender".into()))?;
    let proxy = zbus::fdo::DBusProxy::new(conn).await?;
    let creds = proxy
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| Error::AccessDenied(format!("credentials of {sender}: {e}")))?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| Error::AccessDenied(format!("{sender}: the bus did not tell its uid")))?;
    Ok(Caller {
        name: sender.to_string(),
        uid,
        gids: creds.unix_group_ids().cloned().unwrap_or_default(),
        pid: creds.process_id(),
    })
}

impl Caller {
    /// Root, or a member of `operator_gid`.
    pub fn may_mutate(&self, operator_gid: Option<u32>) -> bool {
        self.uid == 0 || operator_gid.is_some_and(|g| self.gids.contains(&g))
    }
}

/// The gid of group `name` from `group_file` (`/etc/group`), without NSS: an appliance's
/// groups are local.
pub fn group_gid(group_file: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_rules() {
        let c = |uid, gids: &[u32]| Caller {
            name: ":1.1".into(),
            uid,
            gids: gids.to_vec(),
            pid: None,
        };
        assert!(c(0, &[]).may_mutate(None));
        assert!(!c(1000, &[1000]).may_mutate(None));
        assert!(c(1000, &[1000, 4242]).may_mutate(Some(4242)));
        assert!(!c(1000, &[1000]).may_mutate(Some(4242)));
    }

    #[test]
    fn groups_from_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("group");
        std::fs::write(
            &f,
            "root:x:0:\n# c\nappmgr-operators:x:4242:alice,bob\nx:y\n",
        )
        .unwrap();
        assert_eq!(group_gid(&f, "appmgr-operators"), Some(4242));
        assert_eq!(group_gid(&f, "root"), Some(0));
        assert_eq!(group_gid(&f, "nope"), None);
        assert_eq!(group_gid(&f, "x"), None);
    }
}
