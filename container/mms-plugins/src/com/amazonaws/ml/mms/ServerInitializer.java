package com.amazonaws.ml.mms;

import ai.scorer.mms.AbandonedRequests;
import ai.scorer.mms.LoadFailureReporter;
import ai.scorer.mms.ModelBatching;
import com.amazonaws.ml.mms.http.ApiDescriptionRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandler;
import com.amazonaws.ml.mms.http.HttpRequestHandlerChain;
import com.amazonaws.ml.mms.http.InferenceRequestHandler;
import com.amazonaws.ml.mms.http.InvalidRequestHandler;
import com.amazonaws.ml.mms.http.ManagementRequestHandler;
import com.amazonaws.ml.mms.servingsdk.impl.PluginsManager;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.ConnectorType;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpServerCodec;
import io.netty.handler.ssl.SslContext;

/**
 * scorer's replacement for MMS 1.1.11's set-up of each HTTP connection: MMS's own handlers,
 * plus scorer's {@link LoadFailureReporter} on connections that serve the management API and
 * {@link AbandonedRequests} on those that serve the inference API.
 *
 * <p>MMS answers every failed {@code POST /models} with a fixed 500 "Failed to start
 * workers" and only then unregisters the model; the reporter replaces that answer with the
 * reason and status the model's worker recorded, and sends it once the model is gone from
 * {@code GET /models}. MMS never answers requests that were queued for a model when it is
 * unregistered; the second handler answers them 503. Constructing it also gives the models
 * MMS registered at start-up (a single-model endpoint's) scorer's batching ({@link
 * ModelBatching#applyToStartupModels}): MMS builds its connectors right after registering
 * them, before it serves any request, and always registers them with batch size 1. MMS builds a connection's pipeline here
 * and offers no other hook into it, so scorer's {@code ai.scorer.mms.LoadFailures} defines this class in MMS's class
 * loader under MMS's name at start-up, before MMS first uses it (only over the exact 1.1.11
 * class; otherwise MMS keeps its own, with a warning).
 *
 * <p>The handlers are MMS's, in MMS's order: TLS when configured, the HTTP codec, the
 * aggregator (MMS's maximum request size), then one request handler that offers each request
 * to the API description, the inference API (inference connectors), the management API
 * (management connectors) and finally the invalid-request answer. It must compile to this
 * one class file (no lambdas, no enum switch).
 */
public class ServerInitializer extends ChannelInitializer<Channel> {

    private final ConnectorType connectorType;
    private final SslContext sslCtx;

    /**
     * @param sslCtx null without TLS
     * @param type which APIs the connector serves
     */
    public ServerInitializer(SslContext sslCtx, ConnectorType type) {
        this.sslCtx = sslCtx;
        this.connectorType = type;
        ModelBatching.applyToStartupModels();
    }

    @Override
    public void initChannel(Channel ch) {
        boolean inference =
                connectorType == ConnectorType.BOTH
                        || connectorType == ConnectorType.INFERENCE_CONNECTOR;
        boolean management =
                connectorType == ConnectorType.BOTH
                        || connectorType == ConnectorType.MANAGEMENT_CONNECTOR;
        PluginsManager plugins = PluginsManager.getInstance();

        HttpRequestHandlerChain first = new ApiDescriptionRequestHandler(connectorType);
        HttpRequestHandlerChain tail = first;
        if (inference) {
            tail = tail.setNextHandler(new InferenceRequestHandler(plugins.getInferenceEndpoints()));
        }
        if (management) {
            tail =
                    tail.setNextHandler(
                            new ManagementRequestHandler(plugins.getManagementEndpoints()));
        }
        tail.setNextHandler(new InvalidRequestHandler());

        ChannelPipeline pipeline = ch.pipeline();
        if (sslCtx != null) {
            pipeline.addLast("ssl", sslCtx.newHandler(ch.alloc()));
        }
        pipeline.addLast("http", new HttpServerCodec());
        pipeline.addLast(
                "aggregator", new HttpObjectAggregator(ConfigManager.getInstance().getMaxRequestSize()));
        if (management) {
            pipeline.addLast("scorer-load-failures", new LoadFailureReporter());
        }
        if (inference) {
            pipeline.addLast("scorer-abandoned-requests", new AbandonedRequests());
        }
        pipeline.addLast("handler", new HttpRequestHandler(first));
    }
}
