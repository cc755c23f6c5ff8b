//! The `#[node]` attribute of `flowhost-sdk`: parse, check, and emit a `Node` impl that
//! calls into `::flowhost_sdk`. The logic lives in the SDK; see its docs for the shapes.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Item, ItemFn, ItemImpl, Type, parse_macro_input};

/// Turns a function (or an `impl Node for T` block) into the crate's flowhost node.
///
/// `#[node(map)]`, `#[node(filter)]`, `#[node(filter_map)]`, `#[node(flat_map)]` or
/// plain `#[node]` for the general form `fn(msg, out: &mut Output)`. See `flowhost_sdk`.
#[proc_macro_attribute]
pub fn node(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let expanded = match parse_macro_input!(item as Item) {
        Item::Fn(f) => Shape::parse(attr).and_then(|shape| expand_fn(shape, f)),
        Item::Impl(i) => expand_impl(attr, i),
        other => Err(syn::Error::new_spanned(
            other,
            "#[node] goes on a function or on an `impl Node for T` block",
        )),
    };
    expanded.unwrap_or_else(syn::Error::into_compile_error).into()
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Map,
    Filter,
    FilterMap,
    FlatMap,
    General,
}

impl Shape {
    fn parse(attr: TokenStream2) -> syn::Result<Self> {
        if attr.is_empty() {
            return Ok(Shape::General);
        }
        let ident: Ident = syn::parse2(attr.clone()).map_err(|_| shape_error(attr.span()))?;
        Ok(match ident.to_string().as_str() {
            "map" => Shape::Map,
            "filter" => Shape::Filter,
            "filter_map" => Shape::FilterMap,
            "flat_map" => Shape::FlatMap,
            _ => return Err(shape_error(ident.span())),
        })
    }

    /// Parameters before the optional config: the message, and `out` for the general form.
    fn fixed_params(self) -> usize {
        if self == Shape::General { 2 } else { 1 }
    }
}

fn shape_error(span: Span) -> syn::Error {
    syn::Error::new(
        span,
        "unknown node shape: use `map`, `filter`, `filter_map`, `flat_map`, or no argument for the general form",
    )
}

fn expand_fn(shape: Shape, f: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(a, "a node function cannot be async"));
    }
    if let Some(g) = sig
        .generics
        .params
        .iter()
        .find(|g| !matches!(g, syn::GenericParam::Lifetime(_)))
    {
        return Err(syn::Error::new_spanned(
            g,
            "a node function cannot be generic (lifetimes are fine)",
        ));
    }
    let params: Vec<&Type> = sig
        .inputs
        .iter()
        .map(|arg| match arg {
            FnArg::Typed(p) => Ok(&*p.ty),
            FnArg::Receiver(r) => Err(syn::Error::new_spanned(r, "a node function takes no `self`")),
        })
        .collect::<syn::Result<_>>()?;
    let fixed = shape.fixed_params();
    if params.len() < fixed || params.len() > fixed + 1 {
        let expected = if shape == Shape::General {
            "`(msg, out: &mut Output)` and optionally `config: &YourConfig`"
        } else {
            "one message parameter and optionally `config: &YourConfig`"
        };
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            format!("expected {expected}"),
        ));
    }
    if shape == Shape::General && !matches!(params[1], Type::Reference(r) if r.mutability.is_some()) {
        return Err(syn::Error::new_spanned(
            params[1],
            "the second parameter must be `out: &mut Output`",
        ));
    }
    let config = match params.get(fixed) {
        Some(Type::Reference(r)) if r.mutability.is_none() => Some(&*r.elem),
        Some(other) => {
            return Err(syn::Error::new_spanned(
                other,
                "the config parameter must be a shared reference, e.g. `config: &MyConfig`",
            ));
        }
        None => None,
    };

    let fn_name = &sig.ident;
    let vis = &f.vis;
    let node = format_ident!("{}Node", camel(&fn_name.to_string()), span = fn_name.span());
    let sdk = quote!(::flowhost_sdk);
    let (config_ty, fields, init) = match config {
        Some(ty) => (quote!(#ty), quote!({ config: #ty }), quote!(Self { config })),
        None => (
            quote!(#sdk::NoConfig),
            quote!(;),
            quote!({
                let _ = config;
                Self
            }),
        ),
    };
    let config_arg = config.map(|_| quote!(, &self.config));
    // `&str` and `&[u8]` borrow from the batch directly; any other `&T` is decoded, then lent.
    let (input, lend) = match params[0] {
        Type::Reference(r) if !is_borrowed_payload(&r.elem) => (quote!(input), quote!(&input)),
        _ => (quote!(input), quote!(input)),
    };
    let call = quote_spanned!(sig.output.span()=> #fn_name(#lend #config_arg));
    let body = match shape {
        Shape::Map | Shape::FilterMap => quote!(#sdk::Emit::emit_into(#call, out)),
        Shape::FlatMap => quote! {
            for item in #call {
                #sdk::Emit::emit_into(item, out)?;
            }
            ::core::result::Result::Ok(())
        },
        Shape::Filter => quote! {
            if #sdk::Verdict::passes(#call)? {
                out.forward(msg)?;
            }
            ::core::result::Result::Ok(())
        },
        Shape::General => {
            let call = quote_spanned!(sig.output.span()=> #fn_name(#lend, out #config_arg));
            quote!(#sdk::Completion::into_result(#call))
        }
    };
    let doc = format!("The flowhost node that runs [`{fn_name}`]; generated by `#[node]`.");
    Ok(quote! {
        #f

        #[doc = #doc]
        #[allow(dead_code)]
        #vis struct #node #fields

        impl #sdk::Node for #node {
            type Config = #config_ty;

            fn init(config: Self::Config) -> ::core::result::Result<Self, #sdk::NodeError> {
                ::core::result::Result::Ok(#init)
            }

            fn process<'a>(
                &mut self,
                msg: &#sdk::Message<'a>,
                out: &mut #sdk::Output<'a>,
            ) -> ::core::result::Result<(), #sdk::NodeError> {
                let #input = #sdk::FromMessage::from_message(msg)?;
                #body
            }
        }

        #sdk::export_node!(#node);
    })
}

fn expand_impl(attr: TokenStream2, i: ItemImpl) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[node] on an impl block takes no shape",
        ));
    }
    let is_node_impl = i
        .trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|s| s.ident == "Node");
    if !is_node_impl {
        return Err(syn::Error::new_spanned(
            &i.self_ty,
            "#[node] on an impl block needs `impl Node for YourType`",
        ));
    }
    let ty = &i.self_ty;
    Ok(quote! {
        #i
        ::flowhost_sdk::export_node!(#ty);
    })
}

fn is_borrowed_payload(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.is_ident("str"),
        Type::Slice(s) => matches!(&*s.elem, Type::Path(p) if p.path.is_ident("u8")),
        _ => false,
    }
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
        })
        .collect()
}
