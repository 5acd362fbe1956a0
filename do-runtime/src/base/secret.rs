//! The runtime secret: 32 random bytes kept in a data directory's metadata,
//! from which every namespace's id key is derived. Written once, when a
//! runtime first opens an empty directory.

use do_storage::Store;

use crate::base::error::{Error, Result};

const SECRET_KEY: &[u8] = b"runtime-secret";
const SECRET_BYTES: usize = 32;

/// Refuses a shared secret that is empty or only whitespace (`what` names
/// it in the error): such a token would admit anyone who sends none.
pub(crate) fn check_token(token: &[u8], what: &str) -> Result<()> {
    if token.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Setup(format!(
            "{what} is empty: give a secret, or leave authentication off"
        )));
    }
    Ok(())
}

/// The runtime secret of a data directory that has one.
pub(crate) fn load_secret(store: &Store) -> Result<Vec<u8>> {
    match store.get_meta(SECRET_KEY) {
        Ok(Some(secret)) if secret.len() == SECRET_BYTES => Ok(secret.to_vec()),
        Ok(Some(_)) => Err(Error::Setup(
            "the runtime secret in the data directory is damaged".into(),
        )),
        Ok(None) => Err(Error::Setup(
            "not a data directory of a runtime (it has no runtime secret)".into(),
        )),
        Err(e) => Err(Error::Setup(format!("cannot read the runtime secret: {e}"))),
    }
}

/// The runtime secret of a data directory, made and stored durably when the
/// directory is new; the directory is then marked complete. A directory
/// that holds data, or was marked complete, never gets a new secret: every
/// id made with the old one would change.
///
/// With `given` (a deployment secret the user chose, so that another
/// directory makes the same ids), a new directory takes it and one made
/// under another secret is refused.
pub(crate) fn load_or_create_secret(store: &Store, given: Option<&[u8]>) -> Result<Vec<u8>> {
    agreed_secret(store, given, &mut |secret| Ok(secret.to_vec()))
}

/// A deployment secret as a user gives it: 32 bytes, or 64 hex characters
/// (as `do-cli secret --reveal` writes it; surrounding whitespace is
/// ignored).
pub(crate) fn parse_deployment_secret(given: &[u8]) -> Result<Vec<u8>> {
    if given.len() == SECRET_BYTES {
        return Ok(given.to_vec());
    }
    let text = std::str::from_utf8(given).unwrap_or("").trim();
    match hex::decode(text) {
        Ok(secret) if secret.len() == SECRET_BYTES => Ok(secret),
        _ => Err(Error::Setup(format!(
            "a deployment secret is {SECRET_BYTES} bytes or {} hex characters (as `do-cli secret --reveal` writes it); this one is {} bytes",
            2 * SECRET_BYTES,
            given.len()
        ))),
    }
}

/// [`load_or_create_secret`], agreeing the secret with others who share
/// the objects (a replicated log): `agree` is given this directory's secret,
/// or a new one for a new directory, and answers the one to use. A new
/// directory takes it; one with another secret is refused (its ids are
/// not the others').
pub(crate) fn agreed_secret(
    store: &Store,
    given: Option<&[u8]>,
    agree: &mut dyn FnMut(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let another = |whose: &str| {
        Error::Setup(format!(
            "{whose} deployment secret is not the one given (RuntimeBuilder::deployment_secret, do-cli --secret-file): it belongs to another deployment, whose ids are not these"
        ))
    };
    let setup =
        |e: do_storage::StorageError| Error::Setup(format!("cannot read the runtime secret: {e}"));
    let mark = |e: do_storage::StorageError| {
        Error::Setup(format!("cannot mark the data directory complete: {e}"))
    };
    if let Some(secret) = store.get_meta(SECRET_KEY).map_err(setup)? {
        if secret.len() != SECRET_BYTES {
            return Err(Error::Setup(format!(
                "the runtime secret in the data directory is {} bytes, expected {SECRET_BYTES}: the directory is damaged",
                secret.len()
            )));
        }
        if given.is_some_and(|given| given != &secret[..]) {
            return Err(another("the data directory's"));
        }
        if agree(&secret)? != secret[..] {
            return Err(Error::Setup(
                "the data directory's runtime secret is not the replicated log's: the directory belongs to another deployment (its ids would not be the log's)"
                    .into(),
            ));
        }
        // A directory from before marks: marked now that it is known whole.
        store.mark_complete().map_err(mark)?;
        return Ok(secret.to_vec());
    }
    if store.is_complete() || !store.is_empty().map_err(setup)? {
        return Err(Error::Setup(
            "the data directory is damaged: its runtime secret is gone (a journal or the meta keyspace was lost); refusing to make a new one, which would change every id"
                .into(),
        ));
    }
    let proposal = match given {
        Some(given) => given.to_vec(),
        None => {
            let mut secret = vec![0u8; SECRET_BYTES];
            getrandom::fill(&mut secret)
                .map_err(|e| Error::Setup(format!("no OS randomness: {e}")))?;
            secret
        }
    };
    let secret = agree(&proposal)?;
    if given.is_some_and(|given| given != &secret[..]) {
        return Err(another("the replicated log's"));
    }
    if secret.len() != SECRET_BYTES {
        return Err(Error::Setup(format!(
            "the agreed runtime secret is {} bytes, expected {SECRET_BYTES}",
            secret.len()
        )));
    }
    store.put_meta_durable(SECRET_KEY, &secret).map_err(setup)?;
    store.mark_complete().map_err(mark)?;
    Ok(secret)
}
