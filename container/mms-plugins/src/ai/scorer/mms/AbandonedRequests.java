package ai.scorer.mms;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonObject;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.CharsetUtil;
import io.netty.util.ReferenceCountUtil;
import java.util.ArrayDeque;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Answers an inference request that MMS abandoned because its model was unregistered while
 * the request waited.
 *
 * <p>MMS 1.1.11 queues a model's requests in the model ({@code Model}'s job queue); when the
 * model is unregistered, the queue goes with it and nobody answers those requests, so their
 * clients wait until they time out. scorer's supervisor unregisters and registers a model
 * again when its per-model process died (MMS never notices that itself; docs/reliability.md),
 * and requests queued for it then would hang. This handler sits in front of MMS's request
 * handler on inference connections (installed by scorer's {@code
 * com.amazonaws.ml.mms.ServerInitializer}). It notes, for each request, the model it is for
 * ({@code /models/<name>/invoke}, {@code /predictions/<name>}, {@code /invocations}) and the
 * registration it found ({@code ModelManager}'s {@code Model} object). While the oldest
 * unanswered request on the connection waits, it checks every {@link #CHECK_MILLIS}: once
 * that registration is gone (unregistered, or replaced by a new one), MMS will never answer,
 * so it answers 503 {@code {"code", "type", "message"}} itself, and drops an answer MMS might
 * still write for that request (e.g. "Worker died." from a worker that was serving it), so the
 * connection gets exactly one answer per request.
 *
 * <p>One instance per connection; all its methods run on the connection's event loop.
 */
public class AbandonedRequests extends ChannelDuplexHandler {

    static final long CHECK_MILLIS = 250;

    /** A request on this connection, oldest first. */
    private static final class Pending {
        final String model;
        final Model registration;
        boolean answered;

        Pending(String model, Model registration) {
            this.model = model;
            this.registration = registration;
        }
    }

    private final ArrayDeque<Pending> requests = new ArrayDeque<>();
    private ScheduledFuture<?> check;

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (msg instanceof FullHttpRequest) {
            Map<String, Model> models = registered();
            String model = targetModel((FullHttpRequest) msg, models);
            requests.add(new Pending(model, model == null ? null : models.get(model)));
            if (check == null) {
                check =
                        ctx.executor()
                                .scheduleWithFixedDelay(
                                        () -> checkOldest(ctx),
                                        CHECK_MILLIS,
                                        CHECK_MILLIS,
                                        TimeUnit.MILLISECONDS);
            }
        }
        super.channelRead(ctx, msg);
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise)
            throws Exception {
        if (msg instanceof FullHttpResponse) {
            Pending oldest = requests.poll();
            if (oldest != null && oldest.answered) {
                ReferenceCountUtil.release(msg); // MMS's late answer to a request answered here
                promise.trySuccess();
                return;
            }
        }
        super.write(ctx, msg, promise);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        if (check != null) {
            check.cancel(false);
            check = null;
        }
        requests.clear();
        super.channelInactive(ctx);
    }

    private void checkOldest(ChannelHandlerContext ctx) {
        Pending oldest = requests.peek();
        if (oldest == null && check != null) {
            check.cancel(false); // idle connection: the next request schedules it again
            check = null;
            return;
        }
        if (oldest == null || oldest.answered || oldest.registration == null) {
            return;
        }
        if (registered().get(oldest.model) == oldest.registration) {
            return; // still registered: MMS answers it
        }
        oldest.answered = true;
        JsonObject body = new JsonObject();
        body.addProperty("code", 503);
        body.addProperty("type", "ServiceUnavailableException");
        body.addProperty(
                "message",
                "model "
                        + oldest.model
                        + " was restarted while this request waited for it; retry the request");
        FullHttpResponse answer =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        HttpResponseStatus.SERVICE_UNAVAILABLE,
                        Unpooled.copiedBuffer(body + "\n", CharsetUtil.UTF_8));
        answer.headers().set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
        HttpUtil.setContentLength(answer, answer.content().readableBytes());
        ctx.writeAndFlush(answer); // from here: passes the handlers in front, not this one
    }

    private static Map<String, Model> registered() {
        ModelManager manager = ModelManager.getInstance();
        return manager == null ? Map.of() : manager.getModels();
    }

    /**
     * The model an inference request is for, or null: {@code /models/<name>/invoke}, {@code
     * /predictions/<name>}, or {@code /invocations} (its {@code model_name} parameter, else the
     * only registered model).
     */
    static String targetModel(FullHttpRequest request, Map<String, Model> models) {
        QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
        String[] segments = decoder.path().split("/");
        if (segments.length >= 4 && "models".equals(segments[1]) && "invoke".equals(segments[3])) {
            return segments[2];
        }
        if (segments.length >= 3 && "predictions".equals(segments[1])) {
            return segments[2];
        }
        if (segments.length == 2 && "invocations".equals(segments[1])) {
            List<String> named = decoder.parameters().get("model_name");
            if (named != null && !named.isEmpty()) {
                return named.get(0);
            }
            return models.size() == 1 ? models.keySet().iterator().next() : null;
        }
        return null;
    }
}
