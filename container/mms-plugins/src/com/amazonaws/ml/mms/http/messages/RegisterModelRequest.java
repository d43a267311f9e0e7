package com.amazonaws.ml.mms.http.messages;

import ai.scorer.mms.ModelBatching;
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
 * does not name {@code batch_size} / {@code max_batch_delay} gets, for each, the model's own
 * value from the {@code "batching"} object of {@code spec.json} in the model directory
 * ({@code max_batch_size} / {@code max_delay_ms}), else scorer's defaults, the MMS properties
 * {@code scorer_max_batch_size} / {@code scorer_max_batch_delay_ms} (MMS's own values when
 * they are absent or invalid); one that names them keeps its values. Everything else is as in
 * MMS 1.1.11: fields, Gson names, constructors (query string, or the no-arg one Gson fills
 * from a JSON body), getters and defaults.
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

    /** A batch field the request did not name (Gson leaves it as the constructor set it). */
    private static final int UNSET = Integer.MIN_VALUE;

    /** From the query string: every parameter optional; response_timeout is in minutes. */
    public RegisterModelRequest(QueryStringDecoder decoder) {
        modelName = NettyUtils.getParameter(decoder, "model_name", null);
        runtime = NettyUtils.getParameter(decoder, "runtime", null);
        handler = NettyUtils.getParameter(decoder, "handler", null);
        batchSize = NettyUtils.getIntParameter(decoder, "batch_size", UNSET);
        maxBatchDelay = NettyUtils.getIntParameter(decoder, "max_batch_delay", UNSET);
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
        batchSize = UNSET;
        maxBatchDelay = UNSET;
        synchronous = true;
        initialWorkers = ConfigManager.getInstance().getConfiguredDefaultWorkersPerModel();
        responseTimeoutSeconds = -1;
        preloadModel = null;
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

    /** The request's batch_size, else the model's spec, else scorer's default, else 1. */
    public Integer getBatchSize() {
        if (batchSize != UNSET) {
            return batchSize;
        }
        return ModelBatching.batchSize(ModelBatching.modelDir(modelUrl));
    }

    /** The request's max_batch_delay, else the model's spec, else scorer's default, else 100. */
    public Integer getMaxBatchDelay() {
        if (maxBatchDelay != UNSET) {
            return maxBatchDelay;
        }
        return ModelBatching.maxBatchDelay(ModelBatching.modelDir(modelUrl));
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
