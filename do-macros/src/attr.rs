//! The attribute's own arguments: `#[durable_object(name = "…")]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{LitStr, meta::ParseNestedMeta};

use crate::ctxt::Ctxt;

#[derive(Default)]
pub struct Args {
    /// The class name, when given.
    pub name: Option<(String, Span)>,
}

pub fn parse(cx: &mut Ctxt, tokens: TokenStream) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta: ParseNestedMeta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if args.name.is_some() {
                return Err(meta.error("`name` is given twice"));
            }
            if lit.value().is_empty() {
                return Err(syn::Error::new(
                    lit.span(),
                    "the class name must not be empty",
                ));
            }
            args.name = Some((lit.value(), lit.span()));
            Ok(())
        } else {
            Err(meta.error("unknown argument: the only argument is `name = \"ClassName\"`"))
        }
    });
    if let Err(e) = parser.parse2(tokens) {
        cx.syn_error(e);
    }
    args
}
