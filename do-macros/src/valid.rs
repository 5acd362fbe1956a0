//! Every rule a `#[durable_object]` impl block must follow, each violation
//! reported on the offending token. Returns which methods passed, so the
//! expansion can still generate them (one mistake, one error).

use std::collections::HashMap;

use quote::ToTokens;
use syn::{FnArg, GenericArgument, PathArguments, ReturnType, Type};

use crate::ast::{Kind, Method, Object, Output};
use crate::ctxt::Ctxt;

pub use do_wire::RESERVED;

/// Checks the impl block itself; returns whether its constructor can be called.
pub fn check_object(cx: &mut Ctxt, object: &Object) -> bool {
    let item = object.item;
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "#[durable_object] goes on the inherent impl block of a type (`impl Counter { … }`), not on a trait impl",
        );
        return false;
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &item.generics,
            "a Durable Object class cannot be generic: the runtime registers one concrete type per class",
        );
    }
    if object.ident.is_none() {
        cx.error_spanned_by(
            &item.self_ty,
            "expected the name of a type, such as `Counter`",
        );
    }
    match object.constructor {
        None => {
            cx.error_spanned_by(
                &item.self_ty,
                "missing constructor: add `pub fn new(ctx: do_runtime::Ctx) -> Self` to this impl block",
            );
            false
        }
        Some(ctor) => check_constructor(cx, ctor),
    }
}

fn check_constructor(cx: &mut Ctxt, ctor: &syn::ImplItemFn) -> bool {
    let sig = &ctor.sig;
    let wrong = "the constructor must be `pub fn new(ctx: Ctx) -> Self`: not async, no receiver, one `Ctx` argument, returning `Self`";
    if let Some(asyncness) = &sig.asyncness {
        cx.error_spanned_by(
            asyncness,
            "the constructor cannot be async; load state in methods, or in the constructor with `ctx.block_concurrency_while`",
        );
        return false;
    }
    let args_ok = sig.inputs.len() == 1
        && matches!(sig.inputs.first(), Some(FnArg::Typed(pt)) if last_ident_is(&pt.ty, "Ctx"));
    if !args_ok {
        // Empty parentheses have no tokens to point at: point at the name then.
        if sig.inputs.is_empty() {
            cx.error_spanned_by(&sig.ident, wrong);
        } else {
            cx.error_spanned_by(&sig.inputs, wrong);
        }
        return false;
    }
    let returns_self = matches!(&sig.output, ReturnType::Type(_, ty) if last_ident_is(ty, "Self"));
    if !returns_self || !sig.generics.params.is_empty() {
        cx.error_spanned_by(&sig.output, wrong);
        return false;
    }
    true
}

/// Checks one method; returns whether the stub can expose it.
pub fn check_method(cx: &mut Ctxt, method: &Method) -> bool {
    let sig = &method.item.sig;
    let mut ok = true;
    let mut fail = |cx: &mut Ctxt, tokens: &dyn ToTokens, msg: &str| {
        cx.error_spanned_by(tokens.to_token_stream(), msg);
        ok = false;
    };
    if RESERVED.contains(&method.name.to_string().as_str()) {
        fail(
            cx,
            method.name,
            &format!(
                "`{}` is reserved: a stub already has an item with this name; rename the method",
                method.name
            ),
        );
    }
    if sig.asyncness.is_none() {
        fail(
            cx,
            &sig.fn_token,
            "public methods are called through the stub and must be `async`: write `pub async fn`, or make this helper private",
        );
    }
    if let Some(c) = &sig.constness {
        fail(cx, c, "a stub method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        fail(cx, u, "a stub method cannot be `unsafe`");
    }
    if let Some(v) = &sig.variadic {
        fail(cx, v, "a stub method cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        fail(
            cx,
            &sig.generics,
            "a stub method cannot be generic: its arguments are decoded on the object's side, which needs one concrete type",
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.colon_token.is_some() => fail(
            cx,
            r,
            "take `&self`: a stub method receives a shared reference to the instance",
        ),
        Some(FnArg::Receiver(r)) if r.reference.is_none() => fail(
            cx,
            r,
            "take `&self`, not `self`: the instance lives on after the call",
        ),
        Some(FnArg::Receiver(r)) if r.mutability.is_some() => fail(
            cx,
            r,
            "take `&self`, not `&mut self`: calls may interleave at awaits, so methods share the instance; \
             keep in-memory state in `Cell` or `RefCell` (and never hold a borrow across an await)",
        ),
        Some(FnArg::Receiver(_)) => {}
        _ => fail(
            cx,
            method.name,
            "a public method needs a `&self` receiver; only the constructor `new` takes none, so make this function private",
        ),
    }
    for arg in &method.args {
        if arg.ident.is_none() {
            let FnArg::Typed(pt) = arg.fn_arg else {
                continue;
            };
            fail(
                cx,
                &pt.pat,
                "use a plain name for this argument (`pair: (i32, i32)`), not a pattern",
            );
        }
        if let Some((tokens, msg)) = not_owned(arg.ty) {
            fail(
                cx,
                &tokens,
                &format!(
                    "{msg}: arguments are encoded and sent to the object, so they must be owned types (`String`, not `&str`)"
                ),
            );
        }
    }
    match method.kind {
        Kind::Rpc => {}
        Kind::Fetch => {
            if method.args.len() != 1 {
                fail(
                    cx,
                    &sig.inputs,
                    "a `fetch` handler takes one argument, the request: `pub async fn fetch(&self, request: Request) -> Response`",
                );
            }
            if matches!(method.output, Output::Unit) {
                fail(
                    cx,
                    method.name,
                    "a `fetch` handler returns `Response` or `Result<Response, E>`",
                );
            }
        }
        Kind::Handler(h) => {
            if method.args.len() != h.arity {
                fail(
                    cx,
                    &sig.inputs,
                    &format!(
                        "`{}` is called by the runtime with {} arguments: `{}`",
                        h.name, h.arity, h.signature
                    ),
                );
            }
        }
    }
    let out = match method.output {
        Output::Unit => None,
        Output::Fallible(t) | Output::Plain(t) => Some(t),
    };
    if let Some((tokens, msg)) = out.and_then(not_owned) {
        fail(
            cx,
            &tokens,
            &format!(
                "{msg}: results are encoded and sent to the caller, so they must be owned types"
            ),
        );
    }
    ok
}

/// Rejects two method names whose wire ids collide.
pub fn check_ids(cx: &mut Ctxt, methods: &[&Method]) {
    let mut seen: HashMap<u32, &syn::Ident> = HashMap::new();
    for m in methods {
        let id = method_id(&m.name.to_string());
        if let Some(other) = seen.insert(id, m.name) {
            cx.error_spanned_by(
                m.name,
                format!(
                    "`{}` and `{}` hash to the same wire id {id:#010x}; rename one of them",
                    m.name, other
                ),
            );
        }
    }
}

pub use do_wire::method_id;

/// The first part of a type that borrows or is not a concrete type.
fn not_owned(ty: &Type) -> Option<(proc_macro2::TokenStream, &'static str)> {
    match ty {
        Type::Reference(r) => Some((r.to_token_stream(), "this type borrows")),
        Type::ImplTrait(t) => Some((
            t.to_token_stream(),
            "`impl Trait` is not a concrete type; name one owned, serializable type",
        )),
        Type::TraitObject(t) => Some((
            t.to_token_stream(),
            "a trait object is not a concrete, serializable type",
        )),
        Type::Ptr(p) => Some((p.to_token_stream(), "a raw pointer cannot be sent")),
        Type::Paren(p) => not_owned(&p.elem),
        Type::Group(g) => not_owned(&g.elem),
        Type::Array(a) => not_owned(&a.elem),
        Type::Slice(s) => not_owned(&s.elem),
        Type::Tuple(t) => t.elems.iter().find_map(not_owned),
        Type::Path(p) => {
            let q = p.qself.as_ref().and_then(|q| not_owned(&q.ty));
            q.or_else(|| {
                p.path.segments.iter().find_map(|seg| match &seg.arguments {
                    PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
                        GenericArgument::Lifetime(l) => {
                            Some((l.to_token_stream(), "this type borrows"))
                        }
                        GenericArgument::Type(t) => not_owned(t),
                        _ => None,
                    }),
                    _ => None,
                })
            })
        }
        _ => None,
    }
}

fn last_ident_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        _ => false,
    }
}
