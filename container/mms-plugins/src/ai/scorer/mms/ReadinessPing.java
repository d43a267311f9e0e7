package ai.scorer.mms;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.Model;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.Worker;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /ping that tells the truth about readiness.
 *
 * <p>MMS's own /ping answers 200 even when no model could be loaded. On a single-model
 * endpoint SageMaker must not route traffic to such a container, so this answers 503 until
 * every registered model has a running worker. Multi-model endpoints start with no models,
 * so there the server being up is enough.
 */
@Endpoint(
        urlPattern = "ping",
        endpointType = EndpointTypes.INFERENCE,
        description = "SageMaker health check that reflects model readiness")
public class ReadinessPing extends ModelServerEndpoint {

    static boolean allModelsServing(Map<String, Model> models) {
        if (models.isEmpty()) {
            return false;
        }
        for (Model model : models.values()) {
            boolean running = false;
            for (Worker worker : model.getModelWorkers()) {
                running |= worker.isRunning();
            }
            if (!running) {
                return false;
            }
        }
        return true;
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        boolean multiModel =
                Boolean.parseBoolean(ctx.getConfig().getProperty("scorer_multi_model", "false"));
        rsp.setContentType("application/json");
        if (multiModel || allModelsServing(ctx.getModels())) {
            rsp.setStatus(200);
            rsp.getOutputStream().write("{\"status\": \"Healthy\"}\n".getBytes(StandardCharsets.UTF_8));
        } else {
            rsp.setStatus(503, "Model not ready");
            rsp.getOutputStream()
                    .write("{\"status\": \"Unhealthy\", \"message\": \"model is not loaded\"}\n"
                            .getBytes(StandardCharsets.UTF_8));
        }
    }
}
