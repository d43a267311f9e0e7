package ai.scorer.mms;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /metrics: the model workers' Prometheus metrics, per model, summed across workers.
 *
 * <p>The workers write their numbers to files (prometheus_client's multiprocess mode) and
 * scorer's supervisor process merges them and serves the text on a loopback port, whose URL it
 * writes into the MMS properties as {@code scorer_metrics_url}. This endpoint fetches that text
 * and answers with it and its content type (MMS runs plugin endpoints on its task executor, not
 * on a Netty thread). If the property is missing or the server does not answer in time: 503
 * with a one-line reason.
 */
@Endpoint(
        urlPattern = "metrics",
        endpointType = EndpointTypes.INFERENCE,
        description = "Prometheus metrics of the model workers")
public class Metrics extends ModelServerEndpoint {

    static final int CONNECT_TIMEOUT_MS = 2000;
    static final int READ_TIMEOUT_MS = 10000;
    static final int MAX_BYTES = 64 * 1024 * 1024;
    static final String DEFAULT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

    /** The body and content type the metrics server answered with. */
    static final class Scrape {
        final byte[] body;
        final String contentType;

        Scrape(byte[] body, String contentType) {
            this.body = body;
            this.contentType = contentType;
        }
    }

    static Scrape fetch(String url) throws IOException {
        HttpURLConnection connection = (HttpURLConnection) new URL(url).openConnection();
        connection.setConnectTimeout(CONNECT_TIMEOUT_MS);
        connection.setReadTimeout(READ_TIMEOUT_MS);
        connection.setUseCaches(false);
        try {
            int status = connection.getResponseCode();
            if (status != 200) {
                throw new IOException("the metrics server answered " + status);
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            try (InputStream in = connection.getInputStream()) {
                byte[] chunk = new byte[64 * 1024];
                int read;
                while ((read = in.read(chunk)) != -1) {
                    if (out.size() + read > MAX_BYTES) {
                        throw new IOException("the metrics are larger than " + MAX_BYTES + " bytes");
                    }
                    out.write(chunk, 0, read);
                }
            }
            String type = connection.getContentType();
            return new Scrape(out.toByteArray(), type == null ? DEFAULT_CONTENT_TYPE : type);
        } finally {
            connection.disconnect();
        }
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        String url = ctx.getConfig().getProperty("scorer_metrics_url", "");
        String problem;
        if (url.isEmpty()) {
            problem = "metrics are not available: scorer's metrics server is not configured";
        } else {
            try {
                Scrape scrape = fetch(url);
                rsp.setStatus(200);
                rsp.setContentType(scrape.contentType);
                rsp.getOutputStream().write(scrape.body);
                return;
            } catch (IOException | RuntimeException e) {
                problem = "metrics are not available: scorer's metrics server did not answer ("
                        + e.getClass().getSimpleName() + ")";
            }
        }
        rsp.setStatus(503, "Metrics unavailable");
        rsp.setContentType("text/plain; charset=utf-8");
        rsp.getOutputStream().write((problem + "\n").getBytes(StandardCharsets.UTF_8));
    }
}
