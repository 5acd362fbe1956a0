//! Generates the class glue and the client type from a checked model.
//!
//! Generated code names the runtime only through `::do_runtime::__private`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{ItemImpl, spanned::Spanned};

use crate::ast::{Kind, Method, Object, Output};
use crate::ctxt::Ctxt;
use crate::{attr, valid};

pub fn durable_object(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let args = attr::parse(&mut cx, args);
    let item: ItemImpl = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            let msg = syn::Error::new(
                e.span(),
                "#[durable_object] goes on an impl block: `#[durable_object] impl Counter { … }`",
            );
            let error = msg.to_compile_error();
            return quote!(#input #error);
        }
    };
    let object = Object::from_syn(&item);
    let constructible = valid::check_object(&mut cx, &object);
    let exposed: Vec<&Method> = object
        .methods
        .iter()
        .filter(|m| valid::check_method(&mut cx, m))
        .collect();
    valid::check_ids(&mut cx, &exposed);

    let errors = cx.into_compile_errors();
    let generated = object
        .ident
        .filter(|_| object.item.trait_.is_none() && object.item.generics.params.is_empty())
        .map(|ident| {
            Generator {
                object: &object,
                ident,
                exposed: &exposed,
                class: class_name(&args, ident),
                constructible,
            }
            .all()
        });
    quote! {
        #item
        #errors
        #generated
    }
}

fn class_name(args: &attr::Args, ident: &syn::Ident) -> String {
    args.name
        .as_ref()
        .map_or_else(|| ident.to_string(), |(n, _)| n.clone())
}

struct Generator<'a> {
    object: &'a Object<'a>,
    ident: &'a syn::Ident,
    exposed: &'a [&'a Method<'a>],
    class: String,
    /// Whether `new(ctx)` may be called; if not, an error was reported.
    constructible: bool,
}

impl Generator<'_> {
    fn all(&self) -> TokenStream {
        let client = self.client();
        let class_impl = self.class_impl();
        quote! {
            #client
            const _: () = {
                #class_impl
            };
        }
    }

    fn client_ident(&self) -> syn::Ident {
        format_ident!("{}Client", self.ident)
    }

    fn client(&self) -> TokenStream {
        let client = self.client_ident();
        let ident = self.ident;
        let doc = format!(
            "The methods of [`{ident}`] as a caller sees them: what a \
             [`Stub<{ident}>`](::do_runtime::Stub) dereferences to.\n\n\
             Each method sends its call at once, in the order the methods are \
             called (E-order), and returns a future of the result. A method that \
             returns `Result<T, E>` in `{ident}` yields `Result<T, E>` here; any \
             other result `T` yields `Result<T, do_runtime::Error>`. Failures on \
             the way (a broken stub, an overloaded object, a panic) arrive as \
             [`do_runtime::Error`](::do_runtime::Error)."
        );
        let methods = self.exposed.iter().map(|m| match m.kind {
            Kind::Rpc => self.client_method(m),
            Kind::Fetch => self.client_fetch(m),
            Kind::Handler(_) => quote!(),
        });
        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone)]
            pub struct #client {
                raw: ::do_runtime::__private::RawStub,
            }

            impl ::do_runtime::__private::Client for #client {
                fn from_raw(raw: ::do_runtime::__private::RawStub) -> Self {
                    Self { raw }
                }
                fn raw(&self) -> &::do_runtime::__private::RawStub {
                    &self.raw
                }
            }

            impl ::core::fmt::Debug for #client {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(::core::stringify!(#client))
                }
            }

            // The client is as public as the object's methods; when the object
            // or its argument types are private, so is everything that can name it.
            #[allow(private_interfaces)]
            impl #client {
                #(#methods)*
            }
        }
    }

    fn client_method(&self, m: &Method) -> TokenStream {
        let attrs = m.forwarded_attrs();
        let name = m.name;
        let wire = m.name.to_string();
        let arg_names: Vec<_> = m.args.iter().filter_map(|a| a.ident).collect();
        let arg_types: Vec<_> = m.args.iter().map(|a| a.ty).collect();
        // Each argument is encoded on its own, the obligation spanned on its
        // type, so a type that is not serde reports one error, right there.
        let encode = m.args.iter().filter_map(|a| {
            let (ident, ty) = (a.ident?, a.ty);
            Some(quote_spanned! {ty.span()=>
                if __encoded.is_ok() {
                    __encoded = <#ty as ::do_runtime::__private::Wire>::encode(&#ident, &mut __args);
                }
            })
        });
        // Every obligation on the result type is a `Wire` (or
        // `FallibleResult`) method path spanned on that type, so a type that
        // is not serde is reported once, there, with the crate's own message.
        let (output, decode, fail) = match m.output {
            Output::Unit => (
                quote!(::core::result::Result<(), ::do_runtime::Error>),
                quote!(<() as ::do_runtime::__private::Wire>::decode_reply),
                quote!(::core::result::Result::Err),
            ),
            Output::Plain(ty) => (
                quote_spanned!(ty.span()=> ::core::result::Result<#ty, ::do_runtime::Error>),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::Wire>::decode_reply),
                quote!(::core::result::Result::Err),
            ),
            Output::Fallible(ty) => (
                quote_spanned!(ty.span()=> #ty),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::Wire>::decode_fallible),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::FallibleResult>::from_error),
            ),
        };
        let future = quote! {
            impl ::core::future::Future<Output = #output> + ::core::marker::Send + 'static + use<>
        };
        let send = quote! {
            ::do_runtime::__private::call(&self.raw, ID, __encoded.map(|()| __args), #decode, #fail)
        };
        let capacity: usize = if m.args.is_empty() { 0 } else { 32 };
        quote! {
            #(#attrs)*
            pub fn #name(&self #(, #arg_names: #arg_types)*) -> #future {
                const ID: u32 = ::do_runtime::__private::method_id(#wire);
                // Room for small arguments at once: one allocation, no growth.
                let mut __args = ::std::vec::Vec::with_capacity(#capacity);
                let mut __encoded: ::core::result::Result<(), ::do_runtime::Error> = ::core::result::Result::Ok(());
                #(#encode)*
                #send
            }
        }
    }

    /// `fetch` on the client: takes anything that makes a request.
    fn client_fetch(&self, m: &Method) -> TokenStream {
        let attrs = m.forwarded_attrs();
        let fetch = do_wire::FETCH;
        let (output, decode, fail) = match m.output {
            Output::Unit => return quote!(),
            Output::Plain(ty) => (
                quote_spanned!(ty.span()=> ::core::result::Result<#ty, ::do_runtime::Error>),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::FetchWire>::decode_reply),
                quote!(::core::result::Result::Err),
            ),
            Output::Fallible(ty) => (
                quote_spanned!(ty.span()=> #ty),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::FetchWire>::decode_fallible),
                quote_spanned!(ty.span()=> <#ty as ::do_runtime::__private::FallibleResult>::from_error),
            ),
        };
        quote! {
            #(#attrs)*
            ///
            /// Takes a [`Request`](::do_runtime::Request) or a URL such as
            /// `"http://do/path"` (see [`IntoRequest`](::do_runtime::IntoRequest)).
            pub fn fetch<R: ::do_runtime::IntoRequest>(&self, request: R) -> ::do_runtime::Call<#output> {
                const ID: u32 = ::do_runtime::__private::method_id(#fetch);
                let mut __args = ::std::vec::Vec::new();
                let __encoded = ::do_runtime::__private::encode_request(request, &mut __args);
                ::do_runtime::__private::call(&self.raw, ID, __encoded.map(|()| __args), #decode, #fail)
            }
        }
    }

    fn class_impl(&self) -> TokenStream {
        let self_ty = &self.object.item.self_ty;
        let client = self.client_ident();
        let class = &self.class;
        let schema = self.schema();
        let construct = if self.constructible {
            quote!(<#self_ty>::new(ctx))
        } else {
            // An error was reported on the constructor; this keeps it the only one.
            quote!({
                let _ = ctx;
                ::core::unreachable!("no valid constructor")
            })
        };
        let arms = self.exposed.iter().map(|m| self.dispatch_arm(m));
        let has_alarm = self
            .exposed
            .iter()
            .any(|m| matches!(m.kind, Kind::Handler(h) if h.name == do_wire::ALARM.name));
        let infos = self.exposed.iter().map(|m| {
            let name = m.name.to_string();
            let fallible = matches!(m.output, Output::Fallible(_));
            quote! {
                ::do_runtime::__private::MethodInfo {
                    id: ::do_runtime::__private::method_id(#name),
                    name: #name,
                    fallible: #fallible,
                }
            }
        });
        quote! {
            impl ::do_runtime::DurableObject for #self_ty {
                type Client = #client;
                const CLASS: &'static str = #class;
                const SCHEMA: &'static str = #schema;
                const METHODS: &'static [::do_runtime::__private::MethodInfo] = &[#(#infos),*];
                const HAS_ALARM: bool = #has_alarm;

                fn construct(ctx: ::do_runtime::Ctx) -> Self {
                    #construct
                }

                fn dispatch(
                    self: ::do_runtime::__private::Rc<Self>,
                    __call: ::do_runtime::__private::Incoming<'_>,
                ) -> ::core::result::Result<
                    ::do_runtime::__private::LocalBoxFuture<
                        'static,
                        ::core::result::Result<::std::vec::Vec<u8>, ::do_runtime::Error>,
                    >,
                    ::do_runtime::Error,
                > {
                    #(#arms)*
                    ::core::result::Result::Err(::do_runtime::__private::unknown_method(#class, __call.method))
                }
            }
        }
    }

    fn dispatch_arm(&self, m: &Method) -> TokenStream {
        match m.kind {
            Kind::Rpc => self.rpc_arm(m),
            Kind::Fetch => self.fetch_arm(m),
            Kind::Handler(h) => self.handler_arm(m, h),
        }
    }

    fn fetch_arm(&self, m: &Method) -> TokenStream {
        let cfgs = m.cfg_attrs();
        let class = &self.class;
        let fetch = do_wire::FETCH;
        let (Some(arg), Some(ident)) = (m.args.first(), m.args.first().and_then(|a| a.ident))
        else {
            return quote!();
        };
        let ty = arg.ty;
        let (Output::Plain(out) | Output::Fallible(out)) = m.output else {
            return quote!();
        };
        let assert_fallible = match m.output {
            Output::Fallible(ty) => quote_spanned! {ty.span()=>
                let _ = <#ty as ::do_runtime::__private::FallibleResult>::from_error;
            },
            _ => quote!(),
        };
        let decode = quote_spanned! {ty.span()=>
            let #ident = <#ty as ::do_runtime::__private::FetchArg>::from_request(
                ::do_runtime::__private::decode_request(&mut __input)
                    .map_err(|e| ::do_runtime::__private::bad_args(#class, #fetch, e))?,
            );
        };
        let response = quote_spanned! {out.span()=>
            <#out as ::do_runtime::__private::FetchWire>::response
        };
        let encode = quote_spanned! {out.span()=>
            let mut __out = ::std::vec::Vec::new();
            <#out as ::do_runtime::__private::FetchWire>::encode(&__result, &mut __out)
                .map(|()| __out)
                .map_err(::do_runtime::__private::bad_result)
        };
        quote! {
            #(#cfgs)*
            if __call.method == const { ::do_runtime::__private::method_id(#fetch) } {
                #assert_fallible
                let mut __input: &[u8] = __call.args;
                #decode
                ::do_runtime::__private::finish_args(#class, #fetch, __input)?;
                let __ctx = ::core::clone::Clone::clone(__call.ctx);
                return ::core::result::Result::Ok(::do_runtime::__private::Box::pin(async move {
                    let __result = ::do_runtime::__private::fetch_scope(&__ctx, self.fetch(#ident), #response).await;
                    #encode
                }));
            }
        }
    }

    fn handler_arm(&self, m: &Method, h: &crate::ast::Handler) -> TokenStream {
        let cfgs = m.cfg_attrs();
        let name = m.name;
        let wire = h.name;
        let args_fn = format_ident!("{}", h.args_fn);
        let vars: Vec<_> = (0..h.arity).map(|i| format_ident!("__a{i}")).collect();
        let reply = match m.output {
            Output::Unit => quote! { ::do_runtime::__private::HandlerOutput::into_reply(__result) },
            Output::Fallible(ty) | Output::Plain(ty) => quote_spanned! {ty.span()=>
                <#ty as ::do_runtime::__private::HandlerOutput>::into_reply(__result)
            },
        };
        let bind = if h.name == do_wire::ALARM.name {
            // A stale alarm runs no handler.
            quote! {
                let ::core::option::Option::Some(__a0) = ::do_runtime::__private::#args_fn(&__call)? else {
                    return ::core::result::Result::Ok(::do_runtime::__private::Box::pin(async {
                        ::core::result::Result::Ok(::std::vec::Vec::new())
                    }));
                };
            }
        } else {
            quote! { let (#(#vars),*) = ::do_runtime::__private::#args_fn(&__call)?; }
        };
        quote! {
            #(#cfgs)*
            if __call.system && __call.method == const { ::do_runtime::__private::method_id(#wire) } {
                #bind
                return ::core::result::Result::Ok(::do_runtime::__private::Box::pin(async move {
                    let __result = self.#name(#(#vars),*).await;
                    #reply
                }));
            }
        }
    }

    fn rpc_arm(&self, m: &Method) -> TokenStream {
        let cfgs = m.cfg_attrs();
        let name = m.name;
        let wire = m.name.to_string();
        let class = &self.class;
        let arg_names: Vec<_> = m.args.iter().filter_map(|a| a.ident).collect();
        let decode = m.args.iter().filter_map(|a| {
            let (ident, ty) = (a.ident?, a.ty);
            Some(quote_spanned! {ty.span()=>
                let #ident = <#ty as ::do_runtime::__private::Wire>::decode(&mut __input)
                    .map_err(|e| ::do_runtime::__private::bad_args(#class, #wire, e))?;
            })
        });
        // A method's own error type must convert from infrastructure errors;
        // asserting it here, on the type, gives the one message that explains why.
        let assert_fallible = match m.output {
            Output::Fallible(ty) => quote_spanned! {ty.span()=>
                let _ = <#ty as ::do_runtime::__private::FallibleResult>::from_error;
            },
            _ => quote!(),
        };
        let encode_result = match m.output {
            Output::Unit => quote! { ::do_runtime::__private::encode_reply(&__result) },
            Output::Fallible(ty) | Output::Plain(ty) => quote_spanned! {ty.span()=>
                {
                    let mut __out = ::std::vec::Vec::with_capacity(32);
                    <#ty as ::do_runtime::__private::Wire>::encode(&__result, &mut __out)
                        .map(|()| __out)
                        .map_err(::do_runtime::__private::bad_result)
                }
            },
        };
        quote! {
            #(#cfgs)*
            if __call.method == const { ::do_runtime::__private::method_id(#wire) } {
                #assert_fallible
                let mut __input: &[u8] = __call.args;
                #(#decode)*
                ::do_runtime::__private::finish_args(#class, #wire, __input)?;
                return ::core::result::Result::Ok(::do_runtime::__private::Box::pin(async move {
                    let __result = self.#name(#(#arg_names),*).await;
                    #encode_result
                }));
            }
        }
    }

    /// Every exposed method with its argument and result types, sorted by
    /// name so that reordering methods keeps the fingerprint.
    fn schema(&self) -> String {
        let mut entries: Vec<String> = self
            .exposed
            .iter()
            .filter(|m| !matches!(m.kind, Kind::Handler(_)))
            .map(|m| {
                let args: Vec<String> = m.args.iter().map(|a| squash(a.ty)).collect();
                let out = match m.output {
                    Output::Unit => "()".to_owned(),
                    Output::Fallible(t) | Output::Plain(t) => squash(t),
                };
                format!("{}({})->{}", m.name, args.join(","), out)
            })
            .collect();
        entries.sort();
        format!("{}{{{}}}", self.class, entries.join(";"))
    }
}

/// A type's tokens without whitespace.
fn squash(ty: &syn::Type) -> String {
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
