package com.amazonaws.ml.mms.http.messages;

import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.google.gson.annotations.SerializedName;
import io.netty.handler.codec.http.QueryStringDecoder;

/**
 * scorer's replacement for MMS 1.1.11's parameters of {@code POST /models}, with
 * server-wide batching defaults.
 *
 * <p>SageMaker loads a model on a multi-model endpoint with {@code {"model_name", "url"}}
 * only, so MMS registers it with batch size 1 and a 100 ms batch delay. Here a request that
 * does not name {@code batch_size} / {@code max_batch_delay} gets scorer's defaults, the MMS
 * properties {@code scorer_max_batch_size} / {@code scorer_max_batch_delay_ms} (MMS's own
 * values when they are absent or invalid); one that names them keeps its values. Everything
 * else is as in MMS 1.1.11: fields, Gson names, constructors (query string, or the no-arg one
 * Gson fills from a JSON body), getters and defaults.
 *
 * <p>Defined in MMS's class loader under MMS's name by {@code ai.scorer.mms.BatchDefaults}
 * (only over the exact 1.1.11 class). It must compile to this one class file.
 */
public class RegisterModelRequest {

    @SerializedName("model_name")
    private String modelName;

    @SerializedName("runtime")
    private String runtime;

    @SerializedName("handler")
    private String handler;

    @SerializedName("batch_size")
    private int batchSize;

    @SerializedName("max_batch_delay")
    private int maxBatchDelay;

    @SerializedName("initial_workers")
    private int initialWorkers;

    @SerializedName("synchronous")
    private boolean synchronous;

    @SerializedName("response_timeout")
    private int responseTimeoutSeconds;

    @SerializedName("url")
    private String modelUrl;

    @SerializedName("preload_model")
    private String preloadModel;

    /** From the query string: every parameter optional; response_timeout is in minutes. */
    public RegisterModelRequest(QueryStringDecoder decoder) {
        modelName = NettyUtils.getParameter(decoder, "model_name", null);
        runtime = NettyUtils.getParameter(decoder, "runtime", null);
        handler = NettyUtils.getParameter(decoder, "handler", null);
        batchSize = NettyUtils.getIntParameter(decoder, "batch_size", defaultBatchSize());
        maxBatchDelay =
                NettyUtils.getIntParameter(decoder, "max_batch_delay", defaultMaxBatchDelay());
        initialWorkers =
                NettyUtils.getIntParameter(
                        decoder,
                        "initial_workers",
                        ConfigManager.getInstance().getConfiguredDefaultWorkersPerModel());
        synchronous = Boolean.parseBoolean(NettyUtils.getParameter(decoder, "synchronous", "true"));
        responseTimeoutSeconds = 60 * NettyUtils.getIntParameter(decoder, "response_timeout", -1);
        if (responseTimeoutSeconds < 0) {
            responseTimeoutSeconds = -1;
        }
        modelUrl = NettyUtils.getParameter(decoder, "url", null);
        preloadModel = NettyUtils.getParameter(decoder, "preload_model", null);
    }

    /** For Gson (a JSON body): the defaults of the fields the body leaves out. */
    public RegisterModelRequest() {
        batchSize = defaultBatchSize();
        maxBatchDelay = defaultMaxBatchDelay();
        synchronous = true;
        initialWorkers = ConfigManager.getInstance().getConfiguredDefaultWorkersPerModel();
        responseTimeoutSeconds = -1;
        preloadModel = null;
    }

    /** scorer_max_batch_size if it is a whole number of at least 1, else MMS's 1. */
    private static int defaultBatchSize() {
        return property("scorer_max_batch_size", 1, 1);
    }

    /** scorer_max_batch_delay_ms (ms) if it is a whole number of at least 0, else MMS's 100. */
    private static int defaultMaxBatchDelay() {
        return property("scorer_max_batch_delay_ms", 0, 100);
    }

    /** An MMS property (scorer writes it from its own configuration). No static fields. */
    private static int property(String key, int least, int fallback) {
        String value = ConfigManager.getInstance().getProperty(key, null);
        try {
            int parsed = value == null ? fallback : Integer.parseInt(value.trim());
            return parsed >= least ? parsed : fallback;
        } catch (NumberFormatException e) {
            return fallback;
        }
    }

    public String getModelName() {
        return modelName;
    }

    public String getRuntime() {
        return runtime;
    }

    public String getHandler() {
        return handler;
    }

    public Integer getBatchSize() {
        return batchSize;
    }

    public Integer getMaxBatchDelay() {
        return maxBatchDelay;
    }

    public Integer getInitialWorkers() {
        return initialWorkers;
    }

    public Boolean isSynchronous() {
        return synchronous;
    }

    public Integer getResponseTimeoutSeconds() {
        return responseTimeoutSeconds;
    }

    public String getModelUrl() {
        return modelUrl;
    }

    public String getPreloadModel() {
        return preloadModel;
    }
}
