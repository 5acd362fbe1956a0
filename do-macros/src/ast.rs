//! The model of a `#[durable_object]` impl block: its constructor and the
//! methods a stub exposes, borrowed from the syn tree.

use syn::{
    Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType, Type, Visibility,
};

/// The whole class.
pub struct Object<'a> {
    pub item: &'a ItemImpl,
    /// The last segment of the self type: `Counter` in `impl Counter`.
    pub ident: Option<&'a Ident>,
    pub constructor: Option<&'a ImplItemFn>,
    /// Every `pub` fn other than the constructor: the candidates for the stub.
    pub methods: Vec<Method<'a>>,
}

/// One `pub` method.
pub struct Method<'a> {
    pub item: &'a ImplItemFn,
    pub name: &'a Ident,
    pub kind: Kind,
    pub args: Vec<Arg<'a>>,
    pub output: Output<'a>,
}

/// One argument after the receiver.
pub struct Arg<'a> {
    pub fn_arg: &'a FnArg,
    /// The argument's name, when it is a plain identifier pattern.
    pub ident: Option<&'a Ident>,
    pub ty: &'a Type,
}

/// What a method is for, by its name.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An ordinary method: on the stub, called with its arguments.
    Rpc,
    /// `fetch`: on the stub, takes an HTTP request, returns a response.
    Fetch,
    /// Called by the runtime only, never on the stub.
    Handler(&'static Handler),
}

/// A method the runtime calls: its arguments come from a helper in
/// `__private`.
pub struct Handler {
    pub name: &'static str,
    /// The `__private` function that decodes its arguments as a tuple.
    pub args_fn: &'static str,
    pub arity: usize,
    pub signature: &'static str,
}

pub const HANDLERS: &[Handler] = &[
    Handler {
        name: do_wire::ALARM.name,
        args_fn: do_wire::ALARM.args_fn,
        arity: 1,
        signature: "pub async fn alarm(&self, info: AlarmInfo)",
    },
    Handler {
        name: do_wire::WEBSOCKET_MESSAGE.name,
        args_fn: do_wire::WEBSOCKET_MESSAGE.args_fn,
        arity: 2,
        signature: "pub async fn websocket_message(&self, socket: WebSocket, message: Message)",
    },
    Handler {
        name: do_wire::WEBSOCKET_CLOSE.name,
        args_fn: do_wire::WEBSOCKET_CLOSE.args_fn,
        arity: 4,
        signature: "pub async fn websocket_close(&self, socket: WebSocket, code: u16, reason: String, clean: bool)",
    },
    Handler {
        name: do_wire::WEBSOCKET_ERROR.name,
        args_fn: do_wire::WEBSOCKET_ERROR.args_fn,
        arity: 2,
        signature: "pub async fn websocket_error(&self, socket: WebSocket, error: String)",
    },
];

/// What a method returns.
pub enum Output<'a> {
    /// No return type.
    Unit,
    /// A type named `Result`: the method's own error channel.
    Fallible(&'a Type),
    /// Any other type.
    Plain(&'a Type),
}

impl<'a> Object<'a> {
    pub fn from_syn(item: &'a ItemImpl) -> Self {
        let ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
            _ => None,
        };
        let mut constructor = None;
        let mut methods = Vec::new();
        for impl_item in &item.items {
            let ImplItem::Fn(f) = impl_item else { continue };
            if !matches!(f.vis, Visibility::Public(_)) {
                continue;
            }
            if f.sig.ident == "new" && constructor.is_none() {
                constructor = Some(f);
                continue;
            }
            methods.push(Method::from_syn(f));
        }
        Object {
            item,
            ident,
            constructor,
            methods,
        }
    }
}

impl<'a> Method<'a> {
    fn from_syn(item: &'a ImplItemFn) -> Self {
        let args = item
            .sig
            .inputs
            .iter()
            .filter_map(|fn_arg| match fn_arg {
                FnArg::Receiver(_) => None,
                FnArg::Typed(pt) => Some(Arg {
                    fn_arg,
                    ident: match &*pt.pat {
                        Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                            Some(&pi.ident)
                        }
                        _ => None,
                    },
                    ty: &pt.ty,
                }),
            })
            .collect();
        let output = match &item.sig.output {
            ReturnType::Default => Output::Unit,
            ReturnType::Type(_, ty) if is_result(ty) => Output::Fallible(ty),
            ReturnType::Type(_, ty) => Output::Plain(ty),
        };
        let name = &item.sig.ident;
        let kind = if name == do_wire::FETCH {
            Kind::Fetch
        } else {
            HANDLERS
                .iter()
                .find(|h| name == h.name)
                .map_or(Kind::Rpc, Kind::Handler)
        };
        Method {
            item,
            name,
            kind,
            args,
            output,
        }
    }

    /// `#[doc]` and `#[cfg]` attributes, which carry over to the stub method.
    pub fn forwarded_attrs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.item
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"))
    }

    pub fn cfg_attrs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.item.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }
}

/// Whether a type is spelled `…::Result<…>`.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}
