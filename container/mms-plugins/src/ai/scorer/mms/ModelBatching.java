package ai.scorer.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.slf4j.LoggerFactory;

/**
 * A model's batch size and batch delay when its registration does not name them: the {@code
 * "batching"} object of the model's {@code spec.json} ({@code max_batch_size}, {@code
 * max_delay_ms}), else scorer's server-wide defaults, the MMS properties {@code
 * scorer_max_batch_size} / {@code scorer_max_batch_delay_ms}, else MMS's own 1 and 100 ms.
 *
 * <p>Used by scorer's {@code RegisterModelRequest} (models registered with {@code POST
 * /models}) and, through {@link #applyToStartupModels}, by scorer's {@code ServerInitializer}
 * for the models MMS registers at start-up from {@code load_models} (a single-model
 * endpoint's model), which MMS 1.1.11 always registers with batch size 1 ({@code
 * ModelServer.initModelStore}).
 */
public final class ModelBatching {

    /** The largest spec.json read: the model's spec is a few hundred bytes. */
    private static final long MAX_SPEC_BYTES = 1 << 20;

    private static boolean startupModelsDone;

    private ModelBatching() {}

    /** The batch size of a model in {@code modelDir} (null: no spec to read). */
    public static int batchSize(Path modelDir) {
        return fromSpec(modelDir, "max_batch_size", 1, property("scorer_max_batch_size", 1, 1));
    }

    /** The batch delay in ms of a model in {@code modelDir} (null: no spec to read). */
    public static int maxBatchDelay(Path modelDir) {
        return fromSpec(modelDir, "max_delay_ms", 0, property("scorer_max_batch_delay_ms", 0, 100));
    }

    /**
     * The directory of a registration's url: absolute, or under MMS's model store; null for
     * a remote url, an empty one, or a relative one without a model store.
     */
    public static Path modelDir(String url) {
        if (url == null || url.isEmpty() || url.contains("://")) {
            return null;
        }
        try {
            Path dir = Paths.get(url);
            if (dir.isAbsolute()) {
                return dir;
            }
            String store = ConfigManager.getInstance().getModelStore();
            return store == null ? null : Paths.get(store).resolve(dir);
        } catch (RuntimeException e) {
            return null;
        }
    }

    /**
     * Gives each model MMS registered at start-up scorer's batch size and delay (once; MMS
     * registered them before it builds its connections, and serves none until then). MMS's
     * job queue reads both at every poll, so the model's workers batch from the first
     * request on.
     */
    public static synchronized void applyToStartupModels() {
        if (startupModelsDone) {
            return;
        }
        startupModelsDone = true;
        try {
            ModelManager manager = ModelManager.getInstance();
            for (String name : manager.getStartupModels()) {
                Model model = manager.getModels().get(name);
                if (model == null) {
                    continue;
                }
                File dir = model.getModelDir();
                Path path = dir == null ? null : dir.toPath();
                model.setBatchSize(batchSize(path));
                model.setMaxBatchDelay(maxBatchDelay(path));
                LoggerFactory.getLogger("com.amazonaws.ml.mms.ModelServer")
                        .info(
                                "scorer: startup model {} batches up to {} requests, {} ms delay",
                                name,
                                model.getBatchSize(),
                                model.getMaxBatchDelay());
            }
        } catch (RuntimeException e) {
            LoggerFactory.getLogger("com.amazonaws.ml.mms.ModelServer")
                    .warn("scorer: startup models keep MMS's batch size 1: {}", e.toString());
        }
    }

    /**
     * The model's {@code spec.json} member {@code batching.<member>} if it is a whole number of
     * at least {@code least}, else {@code fallback}; anything unreadable or invalid gives
     * {@code fallback} (the model's load then reports a bad spec itself).
     */
    static int fromSpec(Path modelDir, String member, int least, int fallback) {
        if (modelDir == null) {
            return fallback;
        }
        try {
            Path spec = modelDir.resolve("spec.json");
            if (!Files.isRegularFile(spec) || Files.size(spec) > MAX_SPEC_BYTES) {
                return fallback;
            }
            String text = new String(Files.readAllBytes(spec), StandardCharsets.UTF_8);
            JsonElement batching = JsonParser.parseString(text).getAsJsonObject().get("batching");
            if (batching == null || !batching.isJsonObject()) {
                return fallback;
            }
            JsonObject limits = batching.getAsJsonObject();
            if (!limits.has(member) || !limits.get(member).isJsonPrimitive()) {
                return fallback;
            }
            int value = Integer.parseInt(limits.get(member).getAsString().trim());
            return value >= least ? value : fallback;
        } catch (IOException | RuntimeException e) {
            return fallback;
        }
    }

    /** An MMS property (scorer writes it from its own configuration). */
    static int property(String key, int least, int fallback) {
        String value = ConfigManager.getInstance().getProperty(key, null);
        try {
            int parsed = value == null ? fallback : Integer.parseInt(value.trim());
            return parsed >= least ? parsed : fallback;
        } catch (NumberFormatException e) {
            return fallback;
        }
    }
}
