//! An account's roles: stored as one comma-separated column, carried in
//! access tokens as a list. Parsed once, when the row is read, so no
//! caller splits the stored text again.

/// The admin role, the one the API grants.
pub const ADMIN: &str = "admin";

/// An account's roles, sorted and without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles(Vec<String>);

impl Roles {
    pub fn new<S: AsRef<str>>(names: &[S]) -> Roles {
        let mut names: Vec<String> = names
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort_unstable();
        names.dedup();
        Roles(names)
    }

    /// The roles in the stored form, `admin,other`.
    pub fn from_stored(stored: &str) -> Roles {
        Roles::new(&stored.split(',').collect::<Vec<_>>())
    }

    pub fn to_stored(&self) -> String {
        self.0.join(",")
    }

    pub fn has(&self, role: &str) -> bool {
        self.0.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has(ADMIN)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl From<String> for Roles {
    fn from(stored: String) -> Roles {
        Roles::from_stored(&stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_reads_back_sorted_and_without_repeats() {
        let roles = Roles::from_stored(" support,admin,,admin ");
        assert_eq!(roles.names(), ["admin", "support"]);
        assert_eq!(roles.to_stored(), "admin,support");
        assert!(roles.is_admin());
        assert_eq!(Roles::from_stored(""), Roles::default());
        assert!(!Roles::from_stored("administrator").is_admin());
    }
}
