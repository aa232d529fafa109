// Java 17 SunPKCS11 against a PKCS#11 module: KeyStore listing, then
// SHA256withECDSA, SHA256withRSA and RSASSA-PSS signatures made on the
// token and verified by the JDK's own providers with each certificate's
// public key. Run by scripts/clients/java.sh; prints one PASS/FAIL line per
// check and exits 1 on any failure.
//
// Usage: java Pkcs11Check.java CONFIG PIN EC_ALIAS RSA_ALIAS

import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.Security;
import java.security.Signature;
import java.security.spec.AlgorithmParameterSpec;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.util.Collections;
import java.util.List;

public class Pkcs11Check {
    private static int failed = 0;

    private static void check(String name, boolean ok) {
        System.out.println((ok ? "PASS: " : "FAIL: ") + name);
        if (!ok) {
            failed++;
        }
    }

    /** Signs on the token, verifies with the JDK's default provider. */
    private static void signAndVerify(Provider token, String alg, AlgorithmParameterSpec params,
            PrivateKey key, PublicKey pub) throws Exception {
        byte[] doc = ("contract signed with " + alg).getBytes(StandardCharsets.UTF_8);
        Signature signer = Signature.getInstance(alg, token);
        if (params != null) {
            signer.setParameter(params);
        }
        signer.initSign(key);
        signer.update(doc);
        byte[] sig = signer.sign();

        // Signature.getInstance without a provider skips SunPKCS11 for
        // verification here: the public key is a software key, so the JDK's
        // SunEC / SunRsaSign verify it.
        Signature verifier = Signature.getInstance(alg);
        if (params != null) {
            verifier.setParameter(params);
        }
        verifier.initVerify(pub);
        verifier.update(doc);
        boolean good = verifier.verify(sig);
        check(alg + " signed by " + signer.getProvider().getName() + ", verified by "
                + verifier.getProvider().getName(), good && signer.getProvider() == token
                && verifier.getProvider() != token);

        doc[0] ^= 1;
        verifier.initVerify(pub);
        verifier.update(doc);
        check(alg + " signature rejected on a tampered document", !verifier.verify(sig));
    }

    public static void main(String[] args) throws Exception {
        Provider token = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(token);
        KeyStore ks = KeyStore.getInstance("PKCS11", token);
        ks.load(null, args[1].toCharArray());
        List<String> aliases = Collections.list(ks.aliases());
        System.out.println("aliases: " + aliases);
        for (String alias : new String[] {args[2], args[3]}) {
            check("KeyStore lists " + alias + " as a private key entry with its certificate",
                    aliases.contains(alias) && ks.isKeyEntry(alias)
                            && ks.getCertificate(alias) != null);
        }

        PrivateKey ec = (PrivateKey) ks.getKey(args[2], null);
        PublicKey ecPub = ks.getCertificate(args[2]).getPublicKey();
        signAndVerify(token, "SHA256withECDSA", null, ec, ecPub);
        signAndVerify(token, "SHA384withECDSA", null, ec, ecPub);

        PrivateKey rsa = (PrivateKey) ks.getKey(args[3], null);
        PublicKey rsaPub = ks.getCertificate(args[3]).getPublicKey();
        signAndVerify(token, "SHA256withRSA", null, rsa, rsaPub);
        PSSParameterSpec pss =
                new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);
        signAndVerify(token, "RSASSA-PSS", pss, rsa, rsaPub);

        System.out.println("java: " + (failed == 0 ? "all checks passed" : failed + " failed"));
        System.exit(failed == 0 ? 0 : 1);
    }
}
