//! The configuration a runtime hands its objects: named plain values
//! (vars), named secrets, and typed values, set on the builder and read
//! through `Env` (SPEC B1).
//!
//! Secrets are kept in [`SecretText`], whose `Debug` prints no byte of
//! them; nothing of this module is logged, traced, counted, exported or
//! sent to a remote client.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::base::error::{Error, Result};

/// A secret's text: readable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretText(Arc<str>);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every binding of one runtime.
#[derive(Clone, Default)]
pub(crate) struct Bindings {
    vars: HashMap<String, Arc<str>>,
    secrets: HashMap<String, SecretText>,
    typed: HashMap<TypeId, Typed>,
}

/// A typed binding, with its type's name for errors and `Debug`.
#[derive(Clone)]
struct Typed {
    name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl Bindings {
    pub fn set_var(&mut self, name: String, value: String) {
        self.vars.insert(name, value.into());
    }

    pub fn set_secret(&mut self, name: String, value: String) {
        self.secrets.insert(name, SecretText(value.into()));
    }

    pub fn set_typed<T: Any + Send + Sync>(&mut self, value: T) {
        self.typed.insert(
            TypeId::of::<T>(),
            Typed {
                name: std::any::type_name::<T>(),
                value: Arc::new(value),
            },
        );
    }

    /// Refuses names that would be ambiguous or unreadable: empty ones, and
    /// one name both a var and a secret.
    pub fn check(&self) -> Result<()> {
        if self.vars.contains_key("") || self.secrets.contains_key("") {
            return Err(Error::Setup("a binding name is empty".into()));
        }
        if let Some(name) = self.vars.keys().find(|n| self.secrets.contains_key(*n)) {
            return Err(Error::Setup(format!(
                "{name:?} is bound both as a var and as a secret: give them different names"
            )));
        }
        Ok(())
    }

    pub fn var(&self, name: &str) -> Result<&str> {
        self.vars
            .get(name)
            .map(|v| &**v)
            .ok_or_else(|| missing("var", name))
    }

    pub fn secret(&self, name: &str) -> Result<&str> {
        self.secrets
            .get(name)
            .map(|s| &*s.0)
            .ok_or_else(|| missing("secret", name))
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Result<&T> {
        self.typed
            .get(&TypeId::of::<T>())
            .and_then(|t| t.value.downcast_ref::<T>())
            .ok_or_else(|| missing("binding", std::any::type_name::<T>()))
    }

    /// The names bound, by kind, sorted: what `Debug` shows (never a
    /// secret's value, nor a var's).
    pub fn names(&self) -> (Vec<&str>, Vec<&str>, Vec<&'static str>) {
        let mut vars: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        let mut secrets: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        let mut typed: Vec<&'static str> = self.typed.values().map(|t| t.name).collect();
        vars.sort_unstable();
        secrets.sort_unstable();
        typed.sort_unstable();
        (vars, secrets, typed)
    }
}

fn missing(kind: &str, name: &str) -> Error {
    Error::MissingBinding {
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (vars, secrets, typed) = self.names();
        f.debug_struct("Bindings")
            .field("vars", &vars)
            .field("secrets", &secrets)
            .field("typed", &typed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_bindings_and_shows_no_secret() {
        let mut b = Bindings::default();
        b.set_var("REGION".into(), "eu-west".into());
        b.set_secret("API_KEY".into(), "sk-live-123456".into());
        b.set_typed(7u32);
        let shown = format!("{b:?}");
        assert!(shown.contains("API_KEY") && shown.contains("REGION") && shown.contains("u32"));
        assert!(!shown.contains("sk-live-123456"), "{shown}");
        assert!(!format!("{:?}", b.secrets["API_KEY"]).contains("sk-live"));
        assert_eq!(b.secret("API_KEY").ok(), Some("sk-live-123456"));
        assert_eq!(b.get::<u32>().ok(), Some(&7));
        assert!(matches!(
            b.get::<u64>(),
            Err(Error::MissingBinding { kind, name }) if kind == "binding" && name == "u64"
        ));
    }
}
