//! The rule set: who may do what in which organization. Pure functions of the actor and the
//! target, so a table test covers every rule; the operations call them before anything else.

use store::Role;

use super::Actor;

/// Why something is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The actor is not a member of the org: it answers as if the org did not exist.
    NotFound,
    /// A member who may not do this.
    Forbidden(&'static str),
}

/// What is being done, inside one organization or globally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See the org itself, its usage, features and limits, and keys (members: their own).
    Read,
    /// See the members list.
    ReadMembers,
    /// See the org's audit log.
    ReadAudit,
    /// Add, change or remove members (further rules in [`member_change`]).
    ManageMembers,
    /// Create and revoke keys.
    ManageKeys,
    /// Switch feature flags.
    ManageFeatures,
    /// Set and remove limits.
    ManageLimits,
    /// Create, rename and delete organizations; manage users; see everything across orgs.
    Platform,
}

/// Whether `actor` may do `action` in `org` (`None`: a global action).
pub fn check(actor: &Actor, org: Option<i64>, action: Action) -> Result<(), Denied> {
    if actor.superuser {
        return Ok(());
    }
    let Some(org) = org else {
        return Err(Denied::Forbidden("only a superuser may do this"));
    };
    let Some(role) = actor.role_in(org) else {
        return Err(Denied::NotFound);
    };
    let manager = matches!(role, Role::Owner | Role::Admin);
    match action {
        Action::Read => Ok(()),
        Action::ReadMembers | Action::ReadAudit if manager => Ok(()),
        Action::ManageMembers
        | Action::ManageKeys
        | Action::ManageFeatures
        | Action::ManageLimits
            if manager =>
        {
            Ok(())
        }
        Action::Platform => Err(Denied::Forbidden("only a superuser may do this")),
        _ => Err(Denied::Forbidden(
            "only an owner or admin of the organization may do this",
        )),
    }
}

/// Whether `actor` may give `target_user` (now `current`, `None` when not yet a member) the role
/// `new` (`None`: remove them) in `org`. The store separately refuses to leave an org without an
/// owner.
pub fn member_change(
    actor: &Actor,
    org: i64,
    target_user: i64,
    current: Option<Role>,
    new: Option<Role>,
) -> Result<(), Denied> {
    check(actor, Some(org), Action::ManageMembers)?;
    if actor.user_id == Some(target_user) && current.is_some() {
        return Err(Denied::Forbidden(
            "nobody changes their own role or membership; ask another admin",
        ));
    }
    if actor.superuser {
        return Ok(());
    }
    if current == Some(Role::Owner) {
        return Err(Denied::Forbidden(
            "only a superuser may change or remove an owner",
        ));
    }
    if new == Some(Role::Owner) {
        return Err(Denied::Forbidden("only a superuser may make someone owner"));
    }
    Ok(())
}

/// Whether `actor` may see a key that belongs to `key_user` in `org`: managers see every key,
/// members only their own.
pub fn see_key(actor: &Actor, org: i64, key_user: Option<i64>) -> bool {
    check(actor, Some(org), Action::ManageKeys).is_ok()
        || (actor.role_in(org).is_some() && key_user.is_some() && key_user == actor.user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: i64 = 1;
    const OTHER: i64 = 2;

    fn actor(role: Option<Role>, superuser: bool) -> Actor {
        let roles: Vec<(i64, Role)> = role.map(|r| (ORG, r)).into_iter().collect();
        Actor::with_roles(10, superuser, &roles)
    }

    #[test]
    fn every_action_for_every_kind_of_actor() {
        use Action::*;
        let actions = [
            Read,
            ReadMembers,
            ReadAudit,
            ManageMembers,
            ManageKeys,
            ManageFeatures,
            ManageLimits,
            Platform,
        ];
        // (who, expected per action in the order above), in ORG.
        let table: [(&str, Option<Role>, bool, [bool; 8]); 5] = [
            ("superuser", None, true, [true; 8]),
            (
                "owner",
                Some(Role::Owner),
                false,
                [true, true, true, true, true, true, true, false],
            ),
            (
                "admin",
                Some(Role::Admin),
                false,
                [true, true, true, true, true, true, true, false],
            ),
            (
                "member",
                Some(Role::Member),
                false,
                [true, false, false, false, false, false, false, false],
            ),
            ("outsider", None, false, [false; 8]),
        ];
        for (who, role, su, expected) in table {
            let a = actor(role, su);
            for (action, allowed) in actions.iter().zip(expected) {
                let got = check(&a, Some(ORG), *action);
                assert_eq!(got.is_ok(), allowed, "{who} {action:?}");
                match got {
                    Ok(()) => {}
                    Err(Denied::NotFound) => assert!(
                        role.is_none() && !su,
                        "{who} {action:?}: only an outsider gets not-found"
                    ),
                    Err(Denied::Forbidden(_)) => assert!(
                        role.is_some(),
                        "{who} {action:?}: an outsider must get not-found, not forbidden"
                    ),
                }
            }
            // Nothing of another org, except for a superuser.
            assert_eq!(
                check(&a, Some(OTHER), Read).is_ok(),
                su,
                "{who} reading another org"
            );
            if !su {
                assert_eq!(check(&a, Some(OTHER), Read), Err(Denied::NotFound));
            }
            // Global actions are the superuser's.
            assert_eq!(check(&a, None, Platform).is_ok(), su, "{who} platform");
        }
    }

    #[test]
    fn role_changes() {
        use Role::*;
        let su = actor(None, true);
        let owner = actor(Some(Owner), false);
        let admin = actor(Some(Admin), false);
        let member = actor(Some(Member), false);
        let me = 10;
        let them = 20;
        // (who, target, current, new, allowed)
        type Case<'a> = (&'a str, &'a Actor, i64, Option<Role>, Option<Role>, bool);
        let cases: Vec<Case> = vec![
            (
                "admin promotes member to admin",
                &admin,
                them,
                Some(Member),
                Some(Admin),
                true,
            ),
            (
                "admin demotes admin",
                &admin,
                them,
                Some(Admin),
                Some(Member),
                true,
            ),
            (
                "admin removes member",
                &admin,
                them,
                Some(Member),
                None,
                true,
            ),
            ("admin adds member", &admin, them, None, Some(Member), true),
            (
                "admin makes owner",
                &admin,
                them,
                Some(Member),
                Some(Owner),
                false,
            ),
            ("admin adds owner", &admin, them, None, Some(Owner), false),
            (
                "admin demotes owner",
                &admin,
                them,
                Some(Owner),
                Some(Admin),
                false,
            ),
            (
                "admin removes owner",
                &admin,
                them,
                Some(Owner),
                None,
                false,
            ),
            (
                "admin demotes self",
                &admin,
                me,
                Some(Admin),
                Some(Member),
                false,
            ),
            ("admin removes self", &admin, me, Some(Admin), None, false),
            (
                "owner makes owner",
                &owner,
                them,
                Some(Admin),
                Some(Owner),
                false,
            ),
            (
                "owner demotes owner",
                &owner,
                them,
                Some(Owner),
                Some(Admin),
                false,
            ),
            (
                "owner demotes self",
                &owner,
                me,
                Some(Owner),
                Some(Admin),
                false,
            ),
            (
                "owner promotes admin",
                &owner,
                them,
                Some(Member),
                Some(Admin),
                true,
            ),
            (
                "member promotes member",
                &member,
                them,
                Some(Member),
                Some(Admin),
                false,
            ),
            (
                "member removes member",
                &member,
                them,
                Some(Member),
                None,
                false,
            ),
            (
                "superuser makes owner",
                &su,
                them,
                Some(Admin),
                Some(Owner),
                true,
            ),
            (
                "superuser demotes owner",
                &su,
                them,
                Some(Owner),
                Some(Member),
                true,
            ),
            (
                "superuser removes owner",
                &su,
                them,
                Some(Owner),
                None,
                true,
            ),
        ];
        for (what, a, target, current, new, allowed) in cases {
            assert_eq!(
                member_change(a, ORG, target, current, new).is_ok(),
                allowed,
                "{what}"
            );
        }
        let superuser_self = Actor::with_roles(me, true, &[(ORG, Owner)]);
        assert!(
            member_change(&superuser_self, ORG, me, Some(Owner), Some(Member)).is_err(),
            "nobody changes their own role, a superuser neither"
        );
        let outsider = actor(None, false);
        assert_eq!(
            member_change(&outsider, ORG, them, Some(Member), None),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn members_see_only_their_own_keys() {
        let member = actor(Some(Role::Member), false);
        assert!(see_key(&member, ORG, Some(10)));
        assert!(!see_key(&member, ORG, Some(20)));
        assert!(!see_key(&member, ORG, None));
        assert!(see_key(&actor(Some(Role::Admin), false), ORG, Some(20)));
        assert!(!see_key(&actor(None, false), ORG, Some(10)));
        assert!(see_key(&actor(None, true), ORG, None));
    }
}
