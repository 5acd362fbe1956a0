//! The `#[durable_object]` attribute of [do-runtime](https://docs.rs/do-runtime).
//!
//! Use it through `do_runtime::durable_object`; this crate only generates
//! code, which names the runtime through `::do_runtime::__private`.

#![deny(unsafe_code, missing_docs, clippy::unwrap_used)]

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns an inherent impl block into a Durable Object class.
///
/// See the `do_runtime` crate documentation for the rules and an example.
#[proc_macro_attribute]
pub fn durable_object(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::durable_object(args.into(), input.into()).into()
}
