//! The PKCS#11 function tables: the 2.40 `CK_FUNCTION_LIST` returned by
//! C_GetFunctionList and the 3.0 `CK_FUNCTION_LIST_3_0` offered through
//! C_GetInterface. Every slot is filled; a test walks both tables.

use cryptoki_sys::*;

use crate::decrypt::*;
use crate::derive::fn_c_derive_key;
use crate::digest::*;
use crate::encrypt::*;
use crate::ffi;
use crate::general::{self, *};
use crate::objects::*;
use crate::random::*;
use crate::session::*;
use crate::sign::*;
use crate::slots::*;
use crate::symmetric::fn_c_generate_key;
use crate::unsupported::*;
use crate::verify::*;
use crate::wrap::{fn_c_unwrap_key, fn_c_wrap_key};

/// The PKCS#11 2.40 function list.
pub(crate) static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: general::VERSION_2_40,
    C_Initialize: Some(fn_c_initialize),
    C_Finalize: Some(fn_c_finalize),
    C_GetInfo: Some(fn_c_get_info),
    C_GetFunctionList: Some(ffi::C_GetFunctionList),
    C_GetSlotList: Some(fn_c_get_slot_list),
    C_GetSlotInfo: Some(fn_c_get_slot_info),
    C_GetTokenInfo: Some(fn_c_get_token_info),
    C_GetMechanismList: Some(fn_c_get_mechanism_list),
    C_GetMechanismInfo: Some(fn_c_get_mechanism_info),
    C_InitToken: Some(fn_c_init_token),
    C_InitPIN: Some(fn_c_init_pin),
    C_SetPIN: Some(fn_c_set_pin),
    C_OpenSession: Some(fn_c_open_session),
    C_CloseSession: Some(fn_c_close_session),
    C_CloseAllSessions: Some(fn_c_close_all_sessions),
    C_GetSessionInfo: Some(fn_c_get_session_info),
    C_GetOperationState: Some(fn_c_get_operation_state),
    C_SetOperationState: Some(fn_c_set_operation_state),
    C_Login: Some(fn_c_login),
    C_Logout: Some(fn_c_logout),
    C_CreateObject: Some(fn_c_create_object),
    C_CopyObject: Some(fn_c_copy_object),
    C_DestroyObject: Some(fn_c_destroy_object),
    C_GetObjectSize: Some(fn_c_get_object_size),
    C_GetAttributeValue: Some(fn_c_get_attribute_value),
    C_SetAttributeValue: Some(fn_c_set_attribute_value),
    C_FindObjectsInit: Some(fn_c_find_objects_init),
    C_FindObjects: Some(fn_c_find_objects),
    C_FindObjectsFinal: Some(fn_c_find_objects_final),
    C_EncryptInit: Some(fn_c_encrypt_init),
    C_Encrypt: Some(fn_c_encrypt),
    C_EncryptUpdate: Some(fn_c_encrypt_update),
    C_EncryptFinal: Some(fn_c_encrypt_final),
    C_DecryptInit: Some(fn_c_decrypt_init),
    C_Decrypt: Some(fn_c_decrypt),
    C_DecryptUpdate: Some(fn_c_decrypt_update),
    C_DecryptFinal: Some(fn_c_decrypt_final),
    C_DigestInit: Some(fn_c_digest_init),
    C_Digest: Some(fn_c_digest),
    C_DigestUpdate: Some(fn_c_digest_update),
    C_DigestKey: Some(fn_c_digest_key),
    C_DigestFinal: Some(fn_c_digest_final),
    C_SignInit: Some(fn_c_sign_init),
    C_Sign: Some(fn_c_sign),
    C_SignUpdate: Some(fn_c_sign_update),
    C_SignFinal: Some(fn_c_sign_final),
    C_SignRecoverInit: Some(fn_c_sign_recover_init),
    C_SignRecover: Some(fn_c_sign_recover),
    C_VerifyInit: Some(fn_c_verify_init),
    C_Verify: Some(fn_c_verify),
    C_VerifyUpdate: Some(fn_c_verify_update),
    C_VerifyFinal: Some(fn_c_verify_final),
    C_VerifyRecoverInit: Some(fn_c_verify_recover_init),
    C_VerifyRecover: Some(fn_c_verify_recover),
    C_DigestEncryptUpdate: Some(fn_c_digest_encrypt_update),
    C_DecryptDigestUpdate: Some(fn_c_decrypt_digest_update),
    C_SignEncryptUpdate: Some(fn_c_sign_encrypt_update),
    C_DecryptVerifyUpdate: Some(fn_c_decrypt_verify_update),
    C_GenerateKey: Some(fn_c_generate_key),
    C_GenerateKeyPair: Some(fn_c_generate_key_pair),
    C_WrapKey: Some(fn_c_wrap_key),
    C_UnwrapKey: Some(fn_c_unwrap_key),
    C_DeriveKey: Some(fn_c_derive_key),
    C_SeedRandom: Some(fn_c_seed_random),
    C_GenerateRandom: Some(fn_c_generate_random),
    C_GetFunctionStatus: Some(fn_c_get_function_status),
    C_CancelFunction: Some(fn_c_cancel_function),
    C_WaitForSlotEvent: Some(fn_c_wait_for_slot_event),
};

/// The PKCS#11 3.0 function list.
pub(crate) static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = CK_FUNCTION_LIST_3_0 {
    version: general::VERSION_3_0,
    C_Initialize: Some(fn_c_initialize),
    C_Finalize: Some(fn_c_finalize),
    C_GetInfo: Some(general::fn_c_get_info_v3),
    C_GetFunctionList: Some(ffi::C_GetFunctionList),
    C_GetSlotList: Some(fn_c_get_slot_list),
    C_GetSlotInfo: Some(fn_c_get_slot_info),
    C_GetTokenInfo: Some(fn_c_get_token_info),
    C_GetMechanismList: Some(fn_c_get_mechanism_list),
    C_GetMechanismInfo: Some(fn_c_get_mechanism_info),
    C_InitToken: Some(fn_c_init_token),
    C_InitPIN: Some(fn_c_init_pin),
    C_SetPIN: Some(fn_c_set_pin),
    C_OpenSession: Some(fn_c_open_session),
    C_CloseSession: Some(fn_c_close_session),
    C_CloseAllSessions: Some(fn_c_close_all_sessions),
    C_GetSessionInfo: Some(fn_c_get_session_info),
    C_GetOperationState: Some(fn_c_get_operation_state),
    C_SetOperationState: Some(fn_c_set_operation_state),
    C_Login: Some(fn_c_login),
    C_Logout: Some(fn_c_logout),
    C_CreateObject: Some(fn_c_create_object),
    C_CopyObject: Some(fn_c_copy_object),
    C_DestroyObject: Some(fn_c_destroy_object),
    C_GetObjectSize: Some(fn_c_get_object_size),
    C_GetAttributeValue: Some(fn_c_get_attribute_value),
    C_SetAttributeValue: Some(fn_c_set_attribute_value),
    C_FindObjectsInit: Some(fn_c_find_objects_init),
    C_FindObjects: Some(fn_c_find_objects),
    C_FindObjectsFinal: Some(fn_c_find_objects_final),
    C_EncryptInit: Some(fn_c_encrypt_init),
    C_Encrypt: Some(fn_c_encrypt),
    C_EncryptUpdate: Some(fn_c_encrypt_update),
    C_EncryptFinal: Some(fn_c_encrypt_final),
    C_DecryptInit: Some(fn_c_decrypt_init),
    C_Decrypt: Some(fn_c_decrypt),
    C_DecryptUpdate: Some(fn_c_decrypt_update),
    C_DecryptFinal: Some(fn_c_decrypt_final),
    C_DigestInit: Some(fn_c_digest_init),
    C_Digest: Some(fn_c_digest),
    C_DigestUpdate: Some(fn_c_digest_update),
    C_DigestKey: Some(fn_c_digest_key),
    C_DigestFinal: Some(fn_c_digest_final),
    C_SignInit: Some(fn_c_sign_init),
    C_Sign: Some(fn_c_sign),
    C_SignUpdate: Some(fn_c_sign_update),
    C_SignFinal: Some(fn_c_sign_final),
    C_SignRecoverInit: Some(fn_c_sign_recover_init),
    C_SignRecover: Some(fn_c_sign_recover),
    C_VerifyInit: Some(fn_c_verify_init),
    C_Verify: Some(fn_c_verify),
    C_VerifyUpdate: Some(fn_c_verify_update),
    C_VerifyFinal: Some(fn_c_verify_final),
    C_VerifyRecoverInit: Some(fn_c_verify_recover_init),
    C_VerifyRecover: Some(fn_c_verify_recover),
    C_DigestEncryptUpdate: Some(fn_c_digest_encrypt_update),
    C_DecryptDigestUpdate: Some(fn_c_decrypt_digest_update),
    C_SignEncryptUpdate: Some(fn_c_sign_encrypt_update),
    C_DecryptVerifyUpdate: Some(fn_c_decrypt_verify_update),
    C_GenerateKey: Some(fn_c_generate_key),
    C_GenerateKeyPair: Some(fn_c_generate_key_pair),
    C_WrapKey: Some(fn_c_wrap_key),
    C_UnwrapKey: Some(fn_c_unwrap_key),
    C_DeriveKey: Some(fn_c_derive_key),
    C_SeedRandom: Some(fn_c_seed_random),
    C_GenerateRandom: Some(fn_c_generate_random),
    C_GetFunctionStatus: Some(fn_c_get_function_status),
    C_CancelFunction: Some(fn_c_cancel_function),
    C_WaitForSlotEvent: Some(fn_c_wait_for_slot_event),
    C_GetInterfaceList: Some(ffi::C_GetInterfaceList),
    C_GetInterface: Some(ffi::C_GetInterface),
    C_LoginUser: Some(fn_c_login_user),
    C_SessionCancel: Some(fn_c_session_cancel),
    C_MessageEncryptInit: Some(fn_c_message_encrypt_init),
    C_EncryptMessage: Some(fn_c_encrypt_message),
    C_EncryptMessageBegin: Some(fn_c_encrypt_message_begin),
    C_EncryptMessageNext: Some(fn_c_encrypt_message_next),
    C_MessageEncryptFinal: Some(fn_c_message_encrypt_final),
    C_MessageDecryptInit: Some(fn_c_message_decrypt_init),
    C_DecryptMessage: Some(fn_c_decrypt_message),
    C_DecryptMessageBegin: Some(fn_c_decrypt_message_begin),
    C_DecryptMessageNext: Some(fn_c_decrypt_message_next),
    C_MessageDecryptFinal: Some(fn_c_message_decrypt_final),
    C_MessageSignInit: Some(fn_c_message_sign_init),
    C_SignMessage: Some(fn_c_sign_message),
    C_SignMessageBegin: Some(fn_c_sign_message_begin),
    C_SignMessageNext: Some(fn_c_sign_message_next),
    C_MessageSignFinal: Some(fn_c_message_sign_final),
    C_MessageVerifyInit: Some(fn_c_message_verify_init),
    C_VerifyMessage: Some(fn_c_verify_message),
    C_VerifyMessageBegin: Some(fn_c_verify_message_begin),
    C_VerifyMessageNext: Some(fn_c_verify_message_next),
    C_MessageVerifyFinal: Some(fn_c_message_verify_final),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the table as an array of nullable function pointers after its
    /// version; every one must be set.
    fn slots<T: std::fmt::Debug>(table: &T) -> Vec<String> {
        // Debug output of each field: `C_Name: Some(0x...)` or `C_Name: None`.
        let text = format!("{table:#?}");
        text.lines()
            .filter(|l| l.trim_start().starts_with("C_"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    #[test]
    fn every_slot_of_both_tables_is_filled() {
        let v2 = slots(&FUNCTION_LIST);
        let v3 = slots(&FUNCTION_LIST_3_0);
        assert_eq!(v2.len(), 68);
        assert_eq!(v3.len(), 92);
        for line in v2.iter().chain(&v3) {
            assert!(!line.contains("None"), "empty slot: {line}");
        }
    }
}
