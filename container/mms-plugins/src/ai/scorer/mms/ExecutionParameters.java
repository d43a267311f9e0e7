package ai.scorer.mms;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /execution-parameters for SageMaker batch transform.
 *
 * <p>The values are computed by scorer's Python configuration and written into the MMS
 * properties (scorer_*), so environment parsing lives in one place.
 */
@Endpoint(
        urlPattern = "execution-parameters",
        endpointType = EndpointTypes.INFERENCE,
        description = "Batch transform execution parameters")
public class ExecutionParameters extends ModelServerEndpoint {

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        Properties config = ctx.getConfig();
        int concurrent = Integer.parseInt(config.getProperty("scorer_max_concurrent_transforms", "1"));
        int payload = Integer.parseInt(config.getProperty("scorer_max_payload_in_mb", "6"));
        String strategy = config.getProperty("scorer_batch_strategy", "MULTI_RECORD");
        String body =
                String.format(
                        "{\"MaxConcurrentTransforms\": %d, \"BatchStrategy\": \"%s\", "
                                + "\"MaxPayloadInMB\": %d}",
                        concurrent, strategy.replace("\"", ""), payload);
        rsp.setStatus(200);
        rsp.setContentType("application/json");
        rsp.getOutputStream().write(body.getBytes(StandardCharsets.UTF_8));
    }
}
