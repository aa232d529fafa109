//! Object management (PKCS#11 3.0 §5.8) and C_GenerateKeyPair (§5.14).
//! Searches run as one request at C_FindObjectsInit; C_FindObjects pages
//! through the result in the module.

use cryptoki_sys::*;
use mesign_proto::{AttributeValue, ReplyBody, RequestBody};

use crate::attributes::{from_wire, nested_from_wire, template_to_wire};
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out, AttrAnswer, OutBuf, Template};
use crate::session::done;
use crate::sessions::{drive, ensure_idle, Step};

/// An active search: the daemon's matches and how far the application got.
pub(crate) struct FindOp {
    handles: Vec<CK_OBJECT_HANDLE>,
    next: usize,
}

fn object_reply(reply: ReplyBody) -> Result<CK_OBJECT_HANDLE, Error> {
    match reply {
        ReplyBody::Object(h) => Ok(h),
        _ => Err(Error::Transport),
    }
}

pub(crate) extern "C" fn fn_c_create_object(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        if object.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let h = object_reply(
            lib.daemon
                .call(RequestBody::CreateObject { session, template })?,
        )?;
        write_out(object, h)
    })
}

pub(crate) extern "C" fn fn_c_copy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    new_object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        if new_object.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let h = object_reply(lib.daemon.call(RequestBody::CopyObject {
            session,
            object,
            template,
        })?)?;
        write_out(new_object, h)
    })
}

pub(crate) extern "C" fn fn_c_destroy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let result = done(lib, RequestBody::DestroyObject { session, object });
        lib.keys.forget(object);
        result
    })
}

pub(crate) extern "C" fn fn_c_get_object_size(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        if size.is_null() {
            return Err(Error::ArgumentsBad);
        }
        match lib
            .daemon
            .call(RequestBody::ObjectSize { session, object })?
        {
            ReplyBody::ObjectSize(n) => write_out(size, n),
            _ => Err(Error::Transport),
        }
    })
}

/// C_GetAttributeValue: one request for all entries; every entry is then
/// filled by [`Template::fill`].
pub(crate) extern "C" fn fn_c_get_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let mut template = Template::new(template, count)?;
        let types = template.types();
        let answers = match lib.daemon.call(RequestBody::GetAttributes {
            session,
            object,
            types: types.clone(),
        })? {
            ReplyBody::Attributes(a) if a.len() == types.len() => a,
            _ => return Err(Error::Transport),
        };
        let answers = types
            .iter()
            .zip(answers)
            .map(|(&ty, a)| {
                Ok(match a {
                    AttributeValue::Value(v)
                        if mesign_proto::attr::kind(ty)
                            == mesign_proto::attr::AttrKind::AttributeArray =>
                    {
                        AttrAnswer::Nested(nested_from_wire(&v)?)
                    }
                    AttributeValue::Value(v) => AttrAnswer::Value(from_wire(ty, &v)?),
                    AttributeValue::Sensitive => AttrAnswer::Sensitive,
                    AttributeValue::Invalid => AttrAnswer::Invalid,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        template.fill(&answers)
    })
}

pub(crate) extern "C" fn fn_c_set_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let result = done(
            lib,
            RequestBody::SetAttributes {
                session,
                object,
                template,
            },
        );
        lib.keys.forget(object);
        result
    })
}

pub(crate) extern "C" fn fn_c_find_objects_init(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.find)?;
            let handles = match lib
                .daemon
                .call(RequestBody::FindObjects { session, template })?
            {
                ReplyBody::Objects(h) => h,
                _ => return Err(Error::Transport),
            };
            s.find = Some(FindOp { handles, next: 0 });
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_find_objects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.find, |op| {
                if count.is_null() || (objects.is_null() && max != 0) {
                    return Err(Error::ArgumentsBad);
                }
                let n =
                    (op.handles.len() - op.next).min(usize::try_from(max).unwrap_or(usize::MAX));
                let mut room = max;
                OutBuf::new(objects, &mut room)?.put(&op.handles[op.next..op.next + n])?;
                op.next += n;
                write_out(count, n as CK_ULONG)?;
                Ok(Step::Continue)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_find_objects_final(session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|lib| {
        lib.sessions
            .with(session, |s| drive(&mut s.find, |_| Ok(Step::Finished)))?
    })
}

/// C_GenerateKeyPair: the key-pair mechanisms take no parameter; unknown
/// mechanisms are left to the daemon, which knows what the card supports.
#[allow(clippy::too_many_arguments)]
pub(crate) extern "C" fn fn_c_generate_key_pair(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    public_template: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    private_template: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    public_key: *mut CK_OBJECT_HANDLE,
    private_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let mechanism = ffi::mechanism(mechanism)?;
        if matches!(
            mechanism.ty,
            CKM_RSA_PKCS_KEY_PAIR_GEN | CKM_EC_KEY_PAIR_GEN | CKM_EC_EDWARDS_KEY_PAIR_GEN
        ) {
            mechanism.no_parameter()?;
        }
        if public_key.is_null() || private_key.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let public_template =
            template_to_wire(&Template::new(public_template, public_count)?.entries()?)?;
        let private_template =
            template_to_wire(&Template::new(private_template, private_count)?.entries()?)?;
        let request = RequestBody::GenerateKeyPair {
            session,
            mechanism: mechanism.ty,
            public_template,
            private_template,
        };
        match lib.daemon.call(request)? {
            ReplyBody::KeyPair { public, private } => {
                write_out(public_key, public)?;
                write_out(private_key, private)
            }
            _ => Err(Error::Transport),
        }
    })
}
