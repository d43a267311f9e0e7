package ai.scorer.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;

/**
 * Installs scorer's parameters of {@code POST /models} in MMS: server-wide batching defaults
 * for the models SageMaker registers.
 *
 * <p>SageMaker loads a model on a multi-model endpoint with {@code {"model_name", "url"}}
 * only, and MMS 1.1.11 registers it with batch size 1 and a 100 ms batch delay, whatever
 * scorer is configured for. MMS builds the request's parameters with {@code
 * RegisterModelRequest} (from the query string, or from a JSON body through Gson) and loads
 * that class on the first registration, after the plugins. So this service (no {@code
 * @Endpoint}: MMS instantiates it and registers no URL) defines scorer's {@code
 * com.amazonaws.ml.mms.http.messages.RegisterModelRequest} (in this jar's sources) in MMS's
 * class loader first, as {@link WorkerReplyDecoder} does for the worker reply decoder: a load
 * that does not name {@code batch_size} / {@code max_batch_delay} gets the MMS properties
 * {@code scorer_max_batch_size} / {@code scorer_max_batch_delay_ms}; one that names them keeps
 * its values. Only over MMS 1.1.11's exact class (SHA-256); otherwise MMS keeps its own, with a
 * warning. A failure never stops MMS from starting.
 */
public class BatchDefaults extends ModelServerEndpoint {

    static final String TARGET = "com.amazonaws.ml.mms.http.messages.RegisterModelRequest";
    /** The package has no other MMS class: scorer's empty class there anchors the lookup. */
    static final String ANCHOR = "com.amazonaws.ml.mms.http.messages.ScorerAnchor";
    /** The compiled replacement, stored under a name no class loader looks up. */
    static final String PATCH = "ai/scorer/mms/RegisterModelRequest.patch";
    /** MMS 1.1.11 (the multi-model-server 1.1.11 wheel's jar). */
    static final String REPLACED_SHA256 =
            "d52bb9ca4e4f30868bca4e7311502cb49095faa69e8e2777bf948daff12c1378";

    /** What happened: "installed", or why not. Runs once, when MMS loads the plugins. */
    static final String STATUS = install();

    static String install() {
        ConfigManager config = ConfigManager.getInstance();
        return MmsClassPatch.installAndLog(
                TARGET,
                ANCHOR,
                PATCH,
                REPLACED_SHA256,
                "batching defaults",
                "loads without batch settings get the model's spec.json batching, else"
                        + " scorer_max_batch_size="
                        + config.getProperty("scorer_max_batch_size", "unset: 1")
                        + ", scorer_max_batch_delay_ms="
                        + config.getProperty("scorer_max_batch_delay_ms", "unset: 100"),
                "loads without batch settings get MMS's batch_size 1, max_batch_delay 100 ms");
    }
}
