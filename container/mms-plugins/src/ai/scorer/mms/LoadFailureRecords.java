package ai.scorer.mms;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

/**
 * Reads the record a model's worker writes when its load fails: {@code
 * <scorer_load_failures_dir>/<model>.json} holding {@code {"model", "status", "type",
 * "message", "public"}} (written by scorer.modelserver.load_failures; the file name keeps
 * letters, digits, '.', '_' and '-' of the model name and turns anything else into '_').
 */
final class LoadFailureRecords {

    private LoadFailureRecords() {}

    /** The record's path for {@code modelName} in {@code directory}. */
    static Path path(String directory, String modelName) {
        StringBuilder safe = new StringBuilder();
        for (char c : modelName.toCharArray()) {
            safe.append(Character.isLetterOrDigit(c) || c == '.' || c == '_' || c == '-' ? c : '_');
        }
        return Paths.get(directory, (safe.length() == 0 ? "_" : safe.toString()) + ".json");
    }

    /**
     * The record of {@code modelName}, or null: no directory configured, no record, one being
     * replaced, or (with {@code sinceMillis} >= 0) one written before {@code sinceMillis}.
     */
    static JsonObject read(String directory, String modelName, long sinceMillis) {
        if (directory == null || directory.isEmpty() || modelName == null) {
            return null;
        }
        Path path = path(directory, modelName);
        try {
            if (sinceMillis >= 0 && Files.getLastModifiedTime(path).toMillis() < sinceMillis) {
                return null;
            }
            String text = new String(Files.readAllBytes(path), StandardCharsets.UTF_8);
            return JsonParser.parseString(text).getAsJsonObject();
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** A string member of {@code record}, or {@code fallback}. */
    static String string(JsonObject record, String member, String fallback) {
        try {
            return record.has(member) ? record.get(member).getAsString() : fallback;
        } catch (RuntimeException e) {
            return fallback;
        }
    }
}
