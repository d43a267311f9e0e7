package ai.scorer.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import java.io.IOException;
import java.io.InputStream;
import java.lang.invoke.MethodHandles;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Defines a class written by scorer under the name of an MMS class, in MMS's class loader,
 * before MMS loads its own (why this works and what it touches: {@link WorkerReplyDecoder}).
 * Used by the installers, {@link WorkerReplyDecoder} and {@link BatchDefaults}.
 */
final class MmsClassPatch {

    private MmsClassPatch() {}

    /**
     * Installs one replacement, only over the exact MMS class it was written against.
     *
     * @param target the MMS class replaced
     * @param anchor a class of {@code target}'s package in MMS's class loader, for the lookup
     * @param patch the resource holding scorer's compiled class (not a {@code .class} name)
     * @param replacedSha256 the SHA-256 of MMS 1.1.11's class file for {@code target}
     * @return "installed", or "not installed: " and why; never throws
     */
    static synchronized String install(
            String target, String anchor, String patch, String replacedSha256) {
        try {
            ClassLoader mms = ConfigManager.class.getClassLoader();
            Class<?> lookupClass = Class.forName(anchor, false, mms);
            byte[] original = resource(mms, target.replace('.', '/') + ".class");
            byte[] replacement = resource(MmsClassPatch.class.getClassLoader(), patch);
            if (original == null || replacement == null) {
                return "not installed: " + (original == null ? target : patch) + " not found";
            }
            if (!replacedSha256.equals(sha256(original))) {
                return "not installed: MMS's " + target + " is not the 1.1.11 one it replaces";
            }
            MethodHandles.privateLookupIn(lookupClass, MethodHandles.lookup())
                    .defineClass(replacement);
            return "installed";
        } catch (LinkageError e) {
            // e.g. MMS already loaded its own class: too late
            return "not installed: " + e;
        } catch (ReflectiveOperationException | IOException | RuntimeException e) {
            return "not installed: " + e;
        }
    }

    /**
     * {@link #install}, then one line in MMS's log under the replaced class's name (MMS's log
     * configuration keeps its own loggers): "scorer: {@code what} installed ({@code
     * installed})", or a warning "scorer: {@code what} not installed: why; {@code fallback}".
     *
     * @return what {@link #install} returned
     */
    static synchronized String installAndLog(
            String target,
            String anchor,
            String patch,
            String replacedSha256,
            String what,
            String installed,
            String fallback) {
        String status = install(target, anchor, patch, replacedSha256);
        Logger logger = LoggerFactory.getLogger(target);
        if ("installed".equals(status)) {
            logger.info("scorer: {} {} ({})", what, status, installed);
        } else {
            logger.warn("scorer: {} {}; {}", what, status, fallback);
        }
        return status;
    }

    static byte[] resource(ClassLoader loader, String name) throws IOException {
        try (InputStream in = loader.getResourceAsStream(name)) {
            return in == null ? null : in.readAllBytes();
        }
    }

    static String sha256(byte[] data) {
        try {
            StringBuilder hex = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(data)) {
                hex.append(String.format("%02x", b));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
