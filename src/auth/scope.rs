//! Credential scope (SPEC §4): a credential belongs to an organization and, for an app's key, to
//! one app of it. The scope is part of the credential like its grant and fails closed. Every
//! handler that acts on a resource asks [`may_act_on`] with the resource's owner, so no handler
//! can forget the rule: another organization's resource is invisible (404), and an app key
//! reaches only its own app's resources (403 for the rest of its organization).

use uuid::Uuid;

/// Whom a credential speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// An organization's own credential: a key without an app, a session, a wallet.
    Organization(Uuid),
    /// An app's key: the app and the organization that owns it.
    App { organization: Uuid, app: Uuid },
}

impl Scope {
    pub const fn organization(self) -> Uuid {
        match self {
            Scope::Organization(organization) | Scope::App { organization, .. } => organization,
        }
    }
}

/// Who owns a resource: an organization, and the app it belongs to if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub organization: Uuid,
    pub app: Option<Uuid>,
}

impl Owner {
    /// A resource of the organization itself (a key, the ledger, the dashboard).
    pub const fn organization(organization: Uuid) -> Owner {
        Owner {
            organization,
            app: None,
        }
    }
}

/// Why a scope may not act on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Another organization's: answered as if it did not exist.
    NotFound,
    /// The caller's own organization's, outside an app key's app.
    Forbidden,
}

/// The one rule for every resource: see the module docs.
pub fn may_act_on(scope: Scope, owner: Owner) -> Result<(), Denied> {
    if scope.organization() != owner.organization {
        return Err(Denied::NotFound);
    }
    match scope {
        Scope::Organization(_) => Ok(()),
        Scope::App { app, .. } if owner.app == Some(app) => Ok(()),
        Scope::App { .. } => Err(Denied::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_u128(u128::from(n))
    }

    #[test]
    fn the_rule() {
        let (org, other, app, sibling) = (id(1), id(2), id(10), id(11));
        let own = Owner::organization(org);
        let in_app = Owner {
            organization: org,
            app: Some(app),
        };
        let in_sibling = Owner {
            organization: org,
            app: Some(sibling),
        };
        let elsewhere = Owner {
            organization: other,
            app: Some(app),
        };
        let org_scope = Scope::Organization(org);
        let app_scope = Scope::App {
            organization: org,
            app,
        };
        assert_eq!(may_act_on(org_scope, own), Ok(()));
        assert_eq!(may_act_on(org_scope, in_app), Ok(()));
        assert_eq!(may_act_on(org_scope, elsewhere), Err(Denied::NotFound));
        assert_eq!(may_act_on(app_scope, in_app), Ok(()));
        assert_eq!(may_act_on(app_scope, in_sibling), Err(Denied::Forbidden));
        assert_eq!(may_act_on(app_scope, own), Err(Denied::Forbidden));
        assert_eq!(may_act_on(app_scope, elsewhere), Err(Denied::NotFound));
    }

    proptest! {
        /// No scope ever reaches another organization's resource, and an app scope never
        /// reaches anything outside its app.
        #[test]
        fn no_scope_reaches_outside_itself(
            (org, app) in (0u8..4, proptest::option::of(0u8..4)),
            (owner_org, owner_app) in (0u8..4, proptest::option::of(0u8..4)),
        ) {
            let scope = match app {
                Some(app) => Scope::App { organization: id(org), app: id(100 + app) },
                None => Scope::Organization(id(org)),
            };
            let owner = Owner { organization: id(owner_org), app: owner_app.map(|a| id(100 + a)) };
            let allowed = may_act_on(scope, owner).is_ok();
            if org != owner_org {
                prop_assert_eq!(may_act_on(scope, owner), Err(Denied::NotFound));
            }
            if let Some(app) = app {
                prop_assert_eq!(allowed, org == owner_org && owner_app == Some(app));
            } else {
                prop_assert_eq!(allowed, org == owner_org);
            }
        }
    }
}
