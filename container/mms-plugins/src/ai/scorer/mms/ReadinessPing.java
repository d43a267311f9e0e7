package ai.scorer.mms;

import com.google.gson.JsonObject;
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
 * every registered model has a running worker, with a JSON reason: still loading, or the
 * failure the model's worker recorded in {@code <scorer_load_failures_dir>/<model>.json}
 * (written by scorer.serving.handler_service). Multi-model endpoints start with no models,
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

    /** Why a registered model is not serving: its recorded load failure, else "loading". */
    static String reason(Map<String, Model> models, String failuresDir) {
        if (models.isEmpty()) {
            return "no model is registered yet";
        }
        for (Map.Entry<String, Model> entry : models.entrySet()) {
            boolean running = false;
            for (Worker worker : entry.getValue().getModelWorkers()) {
                running |= worker.isRunning();
            }
            if (running) {
                continue;
            }
            String failure = recordedFailure(failuresDir, entry.getKey());
            if (failure != null) {
                return "model " + entry.getKey() + " failed to load: " + failure;
            }
            return "model " + entry.getKey() + " is loading";
        }
        return "model is not loaded";
    }

    static String recordedFailure(String failuresDir, String modelName) {
        JsonObject record = LoadFailureRecords.read(failuresDir, modelName, -1);
        return record == null ? null : LoadFailureRecords.string(record, "message", null);
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        boolean multiModel =
                Boolean.parseBoolean(ctx.getConfig().getProperty("scorer_multi_model", "false"));
        rsp.setContentType("application/json");
        Map<String, Model> models = ctx.getModels();
        if (multiModel || allModelsServing(models)) {
            rsp.setStatus(200);
            rsp.getOutputStream().write("{\"status\": \"Healthy\"}\n".getBytes(StandardCharsets.UTF_8));
        } else {
            String failures = ctx.getConfig().getProperty("scorer_load_failures_dir", "");
            JsonObject body = new JsonObject();
            body.addProperty("status", "Unhealthy");
            body.addProperty("message", reason(models, failures));
            rsp.setStatus(503, "Model not ready");
            rsp.getOutputStream().write((body + "\n").getBytes(StandardCharsets.UTF_8));
        }
    }
}
