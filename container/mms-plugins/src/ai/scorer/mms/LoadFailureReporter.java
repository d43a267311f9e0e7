package ai.scorer.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.CharsetUtil;
import java.util.ArrayDeque;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Gives a failed {@code POST /models} the reason and status its model's worker recorded.
 *
 * <p>MMS 1.1.11 answers every load whose worker fails with a fixed {@code 500 "Failed to start
 * workers"} (the reason is only in the log), and unregisters the model just after answering,
 * so a {@code GET /models} right after the answer may still list it. This handler sits in
 * front of MMS's request handler on management connections (installed by scorer's {@code
 * com.amazonaws.ml.mms.ServerInitializer}). It notes the model name of each {@code POST
 * /models}; when MMS answers that request with an error and the model's worker recorded a
 * failure during the request ({@link LoadFailureRecords}), it replaces the answer with MMS's
 * error shape carrying the recorded status, type and message ({@code {"code", "type",
 * "message"}}, no traceback), and holds it until MMS no longer lists the model (at most
 * {@link #HOLD_MILLIS}). Every other answer passes unchanged.
 *
 * <p>One instance per connection; all its methods run on the connection's event loop.
 */
public class LoadFailureReporter extends ChannelDuplexHandler {

    /** Longest wait for MMS to unregister a failed model before answering anyway. */
    static final long HOLD_MILLIS = 5000;

    static final long POLL_MILLIS = 10;

    /** A record may be stamped up to this much before the request was seen (clock grain). */
    static final long CLOCK_SLACK_MILLIS = 1000;

    private static final String NO_MODEL = "";

    /** One entry per request on this connection, oldest first: a loaded model, or NO_MODEL. */
    private final ArrayDeque<Object[]> requests = new ArrayDeque<>();

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (msg instanceof FullHttpRequest) {
            String model = loadedModel((FullHttpRequest) msg);
            requests.add(new Object[] {model == null ? NO_MODEL : model, System.currentTimeMillis()});
        }
        super.channelRead(ctx, msg);
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise)
            throws Exception {
        if (!(msg instanceof FullHttpResponse)) {
            super.write(ctx, msg, promise);
            return;
        }
        Object[] request = requests.poll();
        FullHttpResponse response = (FullHttpResponse) msg;
        String model = request == null ? NO_MODEL : (String) request[0];
        if (NO_MODEL.equals(model) || response.status().code() < 400) {
            super.write(ctx, msg, promise);
            return;
        }
        String directory =
                ConfigManager.getInstance().getProperty("scorer_load_failures_dir", null);
        long since = (Long) request[1] - CLOCK_SLACK_MILLIS;
        JsonObject record = LoadFailureRecords.read(directory, model, since);
        if (record == null) {
            super.write(ctx, msg, promise);
            return;
        }
        FullHttpResponse answer = withReason(response, record);
        holdUntilUnregistered(ctx, answer, promise, model, System.currentTimeMillis() + HOLD_MILLIS);
    }

    /**
     * The model a request loads: {@code model_name} of a {@code POST /models} (query string
     * or JSON body), else null. A load that names no model is left to MMS.
     */
    static String loadedModel(FullHttpRequest request) {
        if (!HttpMethod.POST.equals(request.method())) {
            return null;
        }
        QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
        String path = decoder.path();
        if (!"/models".equals(path) && !"/models/".equals(path)) {
            return null;
        }
        List<String> named = decoder.parameters().get("model_name");
        String model = named == null || named.isEmpty() ? null : named.get(0);
        CharSequence mime = HttpUtil.getMimeType(request);
        if (mime != null && HttpHeaderValues.APPLICATION_JSON.contentEqualsIgnoreCase(mime)) {
            try {
                JsonObject body =
                        JsonParser.parseString(request.content().toString(CharsetUtil.UTF_8))
                                .getAsJsonObject();
                model = LoadFailureRecords.string(body, "model_name", model);
            } catch (RuntimeException e) {
                return null; // MMS answers a malformed body itself
            }
        }
        return model == null || model.isEmpty() ? null : model;
    }

    /** MMS's error shape with the recorded status (if it is an error status), type, message. */
    static FullHttpResponse withReason(FullHttpResponse response, JsonObject record) {
        int status = response.status().code();
        try {
            int recorded = record.get("status").getAsInt();
            status = recorded >= 400 && recorded <= 599 ? recorded : status;
        } catch (RuntimeException e) {
            // keep MMS's status
        }
        JsonObject body = new JsonObject();
        body.addProperty("code", status);
        body.addProperty("type", LoadFailureRecords.string(record, "type", "ModelLoadError"));
        body.addProperty(
                "message",
                LoadFailureRecords.string(record, "message", "the model failed to load"));
        FullHttpResponse answer =
                response.replace(Unpooled.copiedBuffer(body + "\n", CharsetUtil.UTF_8));
        answer.setStatus(HttpResponseStatus.valueOf(status));
        answer.headers().set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
        HttpUtil.setContentLength(answer, answer.content().readableBytes());
        response.release();
        return answer;
    }

    private static void holdUntilUnregistered(
            ChannelHandlerContext ctx,
            FullHttpResponse answer,
            ChannelPromise promise,
            String model,
            long deadline) {
        if (!ctx.channel().isActive()) {
            answer.release();
            promise.tryFailure(new IllegalStateException("connection closed"));
            return;
        }
        ModelManager models = ModelManager.getInstance();
        boolean listed = models != null && models.getModels().containsKey(model);
        if (!listed || System.currentTimeMillis() >= deadline) {
            ctx.writeAndFlush(answer, promise);
            return;
        }
        ctx.executor()
                .schedule(
                        () -> holdUntilUnregistered(ctx, answer, promise, model, deadline),
                        POLL_MILLIS,
                        TimeUnit.MILLISECONDS);
    }
}
