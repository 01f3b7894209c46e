//! Permissions (SPEC §4): eight resources, each bare (read and write) or `:read` / `:write`. A
//! credential without a list is unrestricted. A set is a bit mask, so "does A cover B" is one
//! `&`, and the no-escalation rule is `requester.covers_all(requested)`.

/// The resources, in the contract's order. WIRE FORMAT: the names are part of the API.
pub const RESOURCES: [&str; 8] = [
    "chat",
    "embeddings",
    "images",
    "video",
    "voice",
    "knowledge",
    "agents",
    "apps",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Read,
    Write,
}

impl Level {
    /// GET and HEAD read; every other method writes.
    pub fn of_method(method: &http::Method) -> Level {
        if method == http::Method::GET || method == http::Method::HEAD {
            Level::Read
        } else {
            Level::Write
        }
    }
}

/// One resource (an index into [`RESOURCES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource(u8);

impl Resource {
    pub const CHAT: Resource = Resource(0);
    pub const EMBEDDINGS: Resource = Resource(1);
    pub const IMAGES: Resource = Resource(2);
    pub const VIDEO: Resource = Resource(3);
    pub const VOICE: Resource = Resource(4);
    pub const KNOWLEDGE: Resource = Resource(5);
    pub const AGENTS: Resource = Resource(6);
    pub const APPS: Resource = Resource(7);

    pub fn name(self) -> &'static str {
        RESOURCES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("unknown")
    }

    const fn bit(self, level: Level) -> u16 {
        let shift = self.0 * 2
            + match level {
                Level::Read => 0,
                Level::Write => 1,
            };
        1 << shift
    }

    /// The permission string a caller lacks, for `details.required` (`chat:write`).
    pub fn required(self, level: Level) -> String {
        let suffix = match level {
            Level::Read => "read",
            Level::Write => "write",
        };
        format!("{}:{suffix}", self.name())
    }
}

/// A restricted credential's permissions. An unrestricted credential has no set at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u16);

/// What a credential may do: everything, or what its set allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Unrestricted,
    Restricted(PermissionSet),
}

impl Grant {
    /// From a stored list: empty means unrestricted. Stored lists were validated on the way in;
    /// an unknown name read back grants nothing.
    pub fn from_stored(list: &[String]) -> Grant {
        if list.is_empty() {
            return Grant::Unrestricted;
        }
        let mut set = PermissionSet::default();
        for name in list {
            if let Ok(bits) = parse_one(name) {
                set.0 |= bits;
            }
        }
        Grant::Restricted(set)
    }

    pub fn allows(self, resource: Resource, level: Level) -> bool {
        match self {
            Grant::Unrestricted => true,
            Grant::Restricted(set) => set.0 & resource.bit(level) != 0,
        }
    }

    /// The no-escalation rule: may a credential with this access create or widen a key to
    /// `requested`? An unrestricted request needs an unrestricted requester.
    pub fn covers(self, requested: Grant) -> bool {
        match (self, requested) {
            (Grant::Unrestricted, _) => true,
            (Grant::Restricted(_), Grant::Unrestricted) => false,
            (Grant::Restricted(mine), Grant::Restricted(theirs)) => theirs.0 & !mine.0 == 0,
        }
    }
}

fn parse_one(name: &str) -> Result<u16, ()> {
    let (resource, level) = match name.split_once(':') {
        Some((r, "read")) => (r, Some(Level::Read)),
        Some((r, "write")) => (r, Some(Level::Write)),
        Some(_) => return Err(()),
        None => (name, None),
    };
    let index = RESOURCES.iter().position(|r| *r == resource).ok_or(())?;
    let resource = Resource(u8::try_from(index).map_err(|_| ())?);
    Ok(match level {
        Some(level) => resource.bit(level),
        None => resource.bit(Level::Read) | resource.bit(Level::Write),
    })
}

/// Validates a requested list: answers the normalised list to store (sorted, without
/// duplicates, `x` replacing `x:read` + `x:write`) or every unknown name.
pub fn normalise(list: &[String]) -> Result<Vec<String>, Vec<String>> {
    let mut bits = 0u16;
    let mut unknown = Vec::new();
    for name in list {
        match parse_one(name.trim()) {
            Ok(b) => bits |= b,
            Err(()) => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut out = Vec::new();
    for (index, name) in RESOURCES.iter().enumerate() {
        let resource = Resource(index as u8);
        let read = bits & resource.bit(Level::Read) != 0;
        let write = bits & resource.bit(Level::Write) != 0;
        match (read, write) {
            (true, true) => out.push((*name).to_string()),
            (true, false) => out.push(format!("{name}:read")),
            (false, true) => out.push(format!("{name}:write")),
            (false, false) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalises_and_rejects_unknown() {
        assert_eq!(
            normalise(&list(&[
                "chat:write",
                "apps",
                "chat:read",
                "voice:read",
                "apps:read"
            ])),
            Ok(list(&["chat", "voice:read", "apps"]))
        );
        assert_eq!(normalise(&list(&[])), Ok(vec![]));
        assert_eq!(
            normalise(&list(&["chat", "admin", "chat:delete", ":read", "CHAT"])),
            Err(list(&["admin", "chat:delete", ":read", "CHAT"]))
        );
    }

    #[test]
    fn access_checks() {
        let a = Grant::from_stored(&list(&["chat:read", "apps"]));
        assert!(a.allows(Resource::CHAT, Level::Read));
        assert!(!a.allows(Resource::CHAT, Level::Write));
        assert!(a.allows(Resource::APPS, Level::Write));
        assert!(!a.allows(Resource::VIDEO, Level::Read));
        assert!(Grant::from_stored(&[]).allows(Resource::VIDEO, Level::Write));
        assert_eq!(Resource::CHAT.required(Level::Write), "chat:write");
    }

    #[test]
    fn no_escalation() {
        let chat_read = Grant::from_stored(&list(&["chat:read"]));
        let chat = Grant::from_stored(&list(&["chat"]));
        assert!(chat.covers(chat_read));
        assert!(!chat_read.covers(chat));
        assert!(!chat.covers(Grant::Unrestricted));
        assert!(Grant::Unrestricted.covers(chat));
    }

    fn names() -> impl Strategy<Value = Vec<String>> {
        let one = (0usize..8, 0u8..3).prop_map(|(r, l)| {
            let name = RESOURCES[r];
            match l {
                0 => name.to_string(),
                1 => format!("{name}:read"),
                _ => format!("{name}:write"),
            }
        });
        proptest::collection::vec(one, 1..6)
    }

    proptest! {
        #[test]
        fn normalising_keeps_meaning_and_is_idempotent(requested in names()) {
            let normal = normalise(&requested).unwrap();
            prop_assert_eq!(Grant::from_stored(&normal), Grant::from_stored(&requested));
            prop_assert_eq!(normalise(&normal).unwrap(), normal);
        }

        #[test]
        fn covers_is_the_subset_relation(a in names(), b in names()) {
            let (x, y) = (Grant::from_stored(&a), Grant::from_stored(&b));
            let subset = (0..8u8).all(|r| [Level::Read, Level::Write].iter().all(|&l| {
                !y.allows(Resource(r), l) || x.allows(Resource(r), l)
            }));
            prop_assert_eq!(x.covers(y), subset);
        }
    }
}
