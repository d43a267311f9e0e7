package ai.scorer.mms;

import java.lang.invoke.MethodHandles;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * Installs scorer's decoder of model-worker replies in MMS before MMS starts any worker.
 *
 * <p>MMS 1.1.11 kills a worker whose reply carries a response header that arrives split
 * across socket reads (see {@code com.amazonaws.ml.mms.util.codec.ModelResponseDecoder} in
 * this folder, and docs/contract.md "MMS header-frame defect and scorer's workaround"). MMS
 * offers no hook into the worker channel's pipeline (WorkerThread builds it with {@code new
 * ModelResponseDecoder(maxResponseSize)}), but it loads that class lazily, when the first
 * worker connects, and plugins are loaded earlier, at start-up ({@code
 * PluginsManager.initialize} runs before the model server is built). So this class, listed as
 * a service like the endpoint plugins but with no {@code @Endpoint} (MMS instantiates it and
 * registers nothing), defines the fixed decoder under MMS's class name in MMS's class loader,
 * with the standard {@link MethodHandles.Lookup#defineClass}: every worker channel MMS ever
 * creates then uses it. No bytecode of MMS is changed and nothing is reflected into.
 *
 * <p>It only replaces the exact class it was written against (SHA-256 of MMS 1.1.11's
 * {@code ModelResponseDecoder.class}); any other MMS keeps its own decoder, with a warning in
 * the log. A failure never stops MMS from starting. The installing itself is shared with
 * {@link BatchDefaults} ({@link MmsClassPatch}).
 */
public class WorkerReplyDecoder extends ModelServerEndpoint {

    static final String TARGET = "com.amazonaws.ml.mms.util.codec.ModelResponseDecoder";
    /** A class of the same package, loaded to anchor the lookup (not the decoder itself). */
    static final String ANCHOR = "com.amazonaws.ml.mms.util.codec.CodecUtils";
    /** The compiled replacement, stored under a name no class loader looks up. */
    static final String PATCH = "ai/scorer/mms/ModelResponseDecoder.patch";
    /** MMS 1.1.11 (the multi-model-server 1.1.11 wheel's jar). */
    static final String REPLACED_SHA256 =
            "045f5fef14415dfa6f4048e2af0965edef0e3d4c52ecdfd5f9049edb428250e4";

    /** What happened: "installed", or why not. Runs once, when MMS loads the plugins. */
    static final String STATUS =
            MmsClassPatch.installAndLog(
                    TARGET,
                    ANCHOR,
                    PATCH,
                    REPLACED_SHA256,
                    "worker reply decoder",
                    "waits for split header frames",
                    "long response headers may kill workers");
}
