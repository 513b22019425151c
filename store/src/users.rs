//! Users (argon2id password hashes, superuser flag) and their memberships in organizations.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::Utc;

use crate::audit::audit_in;
use crate::error::not_found;
use crate::{with_pool, Audit, Membership, Result, Role, Store, StoreError, User};

/// Shortest password accepted.
const MIN_PASSWORD_CHARS: usize = 8;

fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StoreError::Validation(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Validation(format!("cannot hash password: {e}")))
}

/// A valid argon2id hash of a random password, computed once: a login for an unknown email is
/// checked against it, so that it costs the same time as a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(salt.as_str().as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Checks a password against a stored argon2 hash (constant-time inside argon2).
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn check_email(email: &str) -> Result<&str> {
    let email = email.trim();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !valid {
        return Err(StoreError::Validation(format!(
            "{email:?} is not an email address"
        )));
    }
    Ok(email)
}

const USER_COLUMNS: &str = "id, email, is_superuser, created_at";
const MEMBER_SELECT: &str = "SELECT m.org_id, m.user_id, u.email, m.role, m.created_at \
     FROM memberships m JOIN users u ON u.id = m.user_id";

impl Store {
    /// Creates a user; the password is stored as an argon2id hash.
    pub async fn create_user(&self, email: &str, password: &str, superuser: bool) -> Result<User> {
        self.create_user_in(email, password, superuser, None).await
    }

    /// [`Store::create_user`] with its audit row in the same transaction.
    pub async fn create_user_audited(
        &self,
        email: &str,
        password: &str,
        superuser: bool,
        audit: &Audit,
    ) -> Result<User> {
        self.create_user_in(email, password, superuser, Some(audit))
            .await
    }

    async fn create_user_in(
        &self,
        email: &str,
        password: &str,
        superuser: bool,
        audit: Option<&Audit>,
    ) -> Result<User> {
        let email = check_email(email)?.to_lowercase();
        let hash = hash_password(password)?;
        let sql = format!(
            "INSERT INTO users (email, password_hash, is_superuser, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
        );
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let user = sqlx::query_as::<_, User>(&sql)
                .bind(&email).bind(&hash).bind(superuser).bind(now).fetch_one(&mut *tx).await?;
            audit_in!(tx, audit, None::<i64>, &user.email);
            tx.commit().await?;
            Ok(user)
        })
    }

    /// A user and their password hash, for a login check done by the caller off the async
    /// threads (argon2 is deliberately slow).
    pub async fn login_record(&self, email: &str) -> Result<Option<(User, String)>> {
        let email = email.trim().to_lowercase();
        let row: Option<(i64, String)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, password_hash FROM users WHERE email = $1")
            .bind(&email).fetch_optional(pool).await)?;
        let Some((id, hash)) = row else {
            return Ok(None);
        };
        Ok(Some((self.get_user(id).await?, hash)))
    }

    /// One user by id.
    pub async fn get_user(&self, id: i64) -> Result<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        with_pool!(self, pool => sqlx::query_as::<_, User>(&sql).bind(id).fetch_one(pool).await)
            .map_err(StoreError::from)
            .map_err(not_found(format!("user {id}")))
    }

    /// One user by email (case-insensitive).
    pub async fn get_user_by_email(&self, email: &str) -> Result<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let email = email.trim().to_lowercase();
        with_pool!(self, pool => sqlx::query_as::<_, User>(&sql).bind(&email).fetch_one(pool).await)
            .map_err(StoreError::from)
            .map_err(not_found(format!("user {email:?}")))
    }

    /// A user named by id (all digits) or by email.
    pub async fn resolve_user(&self, id_or_email: &str) -> Result<User> {
        match id_or_email.parse::<i64>() {
            Ok(id) => self.get_user(id).await,
            Err(_) => self.get_user_by_email(id_or_email).await,
        }
    }

    /// Every user, by id.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, User>(&sql).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Grants or removes superuser rights.
    pub async fn set_superuser(&self, id: i64, superuser: bool) -> Result<User> {
        self.set_superuser_in(id, superuser, None).await
    }

    /// [`Store::set_superuser`] with its audit row in the same transaction.
    pub async fn set_superuser_audited(
        &self,
        id: i64,
        superuser: bool,
        audit: &Audit,
    ) -> Result<User> {
        self.set_superuser_in(id, superuser, Some(audit)).await
    }

    async fn set_superuser_in(
        &self,
        id: i64,
        superuser: bool,
        audit: Option<&Audit>,
    ) -> Result<User> {
        let sql =
            format!("UPDATE users SET is_superuser = $2 WHERE id = $1 RETURNING {USER_COLUMNS}");
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let user = sqlx::query_as::<_, User>(&sql).bind(id).bind(superuser)
                .fetch_optional(&mut *tx).await?;
            let Some(user) = user else {
                return Err(StoreError::NotFound(format!("user {id}")));
            };
            audit_in!(tx, audit, None::<i64>, &user.email);
            tx.commit().await?;
            Ok(user)
        })
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, id: i64, password: &str) -> Result<()> {
        self.set_password_in(id, password, None, None).await
    }

    /// Replaces a user's password and ends their sessions but `keep_session` (the one that
    /// asked, by its hash), with the audit row, in one transaction.
    pub async fn set_password_audited(
        &self,
        id: i64,
        password: &str,
        keep_session: Option<&str>,
        audit: &Audit,
    ) -> Result<()> {
        self.set_password_in(id, password, keep_session, Some(audit))
            .await
    }

    async fn set_password_in(
        &self,
        id: i64,
        password: &str,
        keep_session: Option<&str>,
        audit: Option<&Audit>,
    ) -> Result<()> {
        let hash = hash_password(password)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                .bind(id).bind(&hash).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {id}")));
            }
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR id_hash <> $2)")
                .bind(id).bind(keep_session).execute(&mut *tx).await?;
            audit_in!(tx, audit, None::<i64>, id);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes a user and their memberships.
    pub async fn delete_user(&self, id: i64) -> Result<()> {
        self.delete_user_in(id, None).await
    }

    /// [`Store::delete_user`] with its audit row in the same transaction.
    pub async fn delete_user_audited(&self, id: i64, audit: &Audit) -> Result<()> {
        self.delete_user_in(id, Some(audit)).await
    }

    async fn delete_user_in(&self, id: i64, audit: Option<&Audit>) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {id}")));
            }
            audit_in!(tx, audit, None::<i64>, id);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Makes a user a member of an org with a role.
    pub async fn add_member(&self, org_id: i64, user_id: i64, role: Role) -> Result<Membership> {
        self.add_member_in(org_id, user_id, role, None).await
    }

    /// [`Store::add_member`] with its audit row in the same transaction.
    pub async fn add_member_audited(
        &self,
        org_id: i64,
        user_id: i64,
        role: Role,
        audit: &Audit,
    ) -> Result<Membership> {
        self.add_member_in(org_id, user_id, role, Some(audit)).await
    }

    async fn add_member_in(
        &self,
        org_id: i64,
        user_id: i64,
        role: Role,
        audit: Option<&Audit>,
    ) -> Result<Membership> {
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
                .bind(org_id).bind(user_id).bind(role.as_str()).bind(now).execute(&mut *tx).await?;
            audit_in!(tx, audit, Some(org_id), user_id);
            tx.commit().await?;
        });
        self.get_membership(org_id, user_id).await
    }

    /// One membership.
    pub async fn get_membership(&self, org_id: i64, user_id: i64) -> Result<Membership> {
        let sql = format!("{MEMBER_SELECT} WHERE m.org_id = $1 AND m.user_id = $2");
        with_pool!(self, pool => sqlx::query_as::<_, Membership>(&sql)
            .bind(org_id).bind(user_id).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(not_found(format!(
            "membership of user {user_id} in organization {org_id}"
        )))
    }

    /// Changes a member's role.
    /// Refused with [`StoreError::LastOwner`] when it would leave an org that has owners
    /// without one.
    pub async fn set_role(&self, org_id: i64, user_id: i64, role: Role) -> Result<Membership> {
        self.change_member(org_id, user_id, Some(role), None, None)
            .await?;
        self.get_membership(org_id, user_id).await
    }

    /// [`Store::set_role`] with its audit row in the same transaction, refused with
    /// [`StoreError::Conflict`] when the member's role is no longer `expected` (what the caller
    /// authorized the change against).
    pub async fn set_role_audited(
        &self,
        org_id: i64,
        user_id: i64,
        role: Role,
        expected: Role,
        audit: &Audit,
    ) -> Result<Membership> {
        self.change_member(org_id, user_id, Some(role), Some(expected), Some(audit))
            .await?;
        self.get_membership(org_id, user_id).await
    }

    /// Removes a user from an org; refused with [`StoreError::LastOwner`] for its last owner.
    pub async fn remove_member(&self, org_id: i64, user_id: i64) -> Result<()> {
        self.change_member(org_id, user_id, None, None, None).await
    }

    /// [`Store::remove_member`] with its audit row in the same transaction, refused like
    /// [`Store::set_role_audited`] when the role is no longer `expected`.
    pub async fn remove_member_audited(
        &self,
        org_id: i64,
        user_id: i64,
        expected: Role,
        audit: &Audit,
    ) -> Result<()> {
        self.change_member(org_id, user_id, None, Some(expected), Some(audit))
            .await
    }

    /// Sets a member's role (`Some`) or removes them (`None`). The org's row is locked first on
    /// PostgreSQL (SQLite writes one at a time), so two concurrent demotions cannot both see
    /// another owner left.
    async fn change_member(
        &self,
        org_id: i64,
        user_id: i64,
        role: Option<Role>,
        expected: Option<Role>,
        audit: Option<&Audit>,
    ) -> Result<()> {
        let missing = || {
            StoreError::NotFound(format!(
                "membership of user {user_id} in organization {org_id}"
            ))
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
                    .bind(org_id).execute(&mut *tx).await?;
            } else {
                // Take SQLite's write lock now, so the count below is what the write sees.
                sqlx::query("UPDATE organizations SET id = id WHERE id = -1")
                    .execute(&mut *tx).await?;
            }
            let current: Option<Role> = sqlx::query_scalar(
                "SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org_id).bind(user_id).fetch_optional(&mut *tx).await?;
            let Some(current) = current else {
                return Err(missing());
            };
            if expected.is_some_and(|e| e != current) {
                return Err(StoreError::Conflict {
                    constraint: "the member's role changed meanwhile".into(),
                });
            }
            match role {
                Some(role) => sqlx::query(
                    "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id).bind(user_id).bind(role.as_str()).execute(&mut *tx).await?,
                None => sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id).bind(user_id).execute(&mut *tx).await?,
            };
            if current == Role::Owner && role != Some(Role::Owner) {
                let owners: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = $2")
                    .bind(org_id).bind(Role::Owner.as_str()).fetch_one(&mut *tx).await?;
                if owners == 0 {
                    return Err(StoreError::LastOwner);
                }
            }
            audit_in!(tx, audit, Some(org_id), user_id);
            tx.commit().await?;
            Ok(())
        })
    }

    /// An org's members, by user id.
    pub async fn list_members(&self, org_id: i64) -> Result<Vec<Membership>> {
        let sql = format!("{MEMBER_SELECT} WHERE m.org_id = $1 ORDER BY m.user_id");
        with_pool!(self, pool => sqlx::query_as::<_, Membership>(&sql).bind(org_id).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// A user's memberships, by org id.
    pub async fn memberships_of(&self, user_id: i64) -> Result<Vec<Membership>> {
        let sql = format!("{MEMBER_SELECT} WHERE m.user_id = $1 ORDER BY m.org_id");
        with_pool!(self, pool => sqlx::query_as::<_, Membership>(&sql).bind(user_id).fetch_all(pool).await)
            .map_err(StoreError::from)
    }
}
