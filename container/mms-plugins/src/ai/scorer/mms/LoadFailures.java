package ai.scorer.mms;

import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * Installs scorer's set-up of MMS's HTTP connections, which adds {@link LoadFailureReporter}
 * (a failed {@code POST /models} answers with the recorded reason and status) to the
 * management connections.
 *
 * <p>MMS builds each connection's pipeline in {@code com.amazonaws.ml.mms.ServerInitializer}
 * and loads that class when it starts listening, after the plugins are loaded. So this service
 * (no {@code @Endpoint}: MMS instantiates it and registers no URL) defines scorer's class of
 * that name (in this jar's sources) in MMS's class loader first, as {@link WorkerReplyDecoder}
 * does for the worker reply decoder. Only over MMS 1.1.11's exact class (SHA-256); otherwise
 * MMS keeps its own, with a warning. A failure never stops MMS from starting.
 */
public class LoadFailures extends ModelServerEndpoint {

    static final String TARGET = "com.amazonaws.ml.mms.ServerInitializer";
    /** MMS's main class: loaded before the plugins, in the replaced class's package. */
    static final String ANCHOR = "com.amazonaws.ml.mms.ModelServer";
    /** The compiled replacement, stored under a name no class loader looks up. */
    static final String PATCH = "ai/scorer/mms/ServerInitializer.patch";
    /** MMS 1.1.11 (the multi-model-server 1.1.11 wheel's jar). */
    static final String REPLACED_SHA256 =
            "b25df178108adb838a2c96567c4f2a32cbcb6cd3a64384df4f9e3e3257b5471e";

    /** What happened: "installed", or why not. Runs once, when MMS loads the plugins. */
    static final String STATUS =
            MmsClassPatch.installAndLog(
                    TARGET,
                    ANCHOR,
                    PATCH,
                    REPLACED_SHA256,
                    "load failure reporting",
                    "POST /models answers the reason; queued requests of a model unregistered"
                            + " are answered 503",
                    "a failed POST /models answers MMS's 500 \"Failed to start workers\"");
}
