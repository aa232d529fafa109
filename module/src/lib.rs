//! MeSign PKCS#11 module.
