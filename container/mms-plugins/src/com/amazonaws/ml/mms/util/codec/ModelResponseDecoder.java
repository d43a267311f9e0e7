package com.amazonaws.ml.mms.util.codec;

import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * scorer's replacement for MMS 1.1.11's decoder of model-worker replies (same name, same
 * constructor, same wire format, same messages out). It is not loaded from this jar:
 * {@code ai.scorer.mms.WorkerReplyDecoder} defines it in MMS's own package before MMS first
 * needs the class, and only over the exact 1.1.11 class it was written against.
 *
 * <p>Why: MMS 1.1.11 decodes a reply again from its start whenever more bytes arrive, and
 * waits ("buffer under-run") when a length-prefixed field is incomplete, except in two
 * places. {@code CodecUtils.readMap} checks each response header's key and value length
 * against the bytes already read and throws {@code CorruptedFrameException: Message size
 * exceed limit: <length>} (or "Invalid message size: -3") when the header map is split
 * across socket reads, and the per-request status code is read with no check (an
 * {@code IndexOutOfBoundsException} when a read ends inside it). Either closes the worker's
 * channel: the request gets 500 "Worker died." and the worker is restarted. Netty's adaptive
 * read buffer shrinks after a few short replies, so a reply carrying a long header (a
 * 1,024-character {@code X-Amzn-SageMaker-Custom-Attributes}, which SageMaker allows) is
 * split and kills the worker. Here every field waits for its bytes; a frame is rejected only
 * for a length above {@code maxBufferSize} or a negative length, as in MMS.
 *
 * <p>Frame (big-endian ints): code, message; then per prediction: request id, content type,
 * status code, reason phrase, header count, (key, value) * count, body; then -1.
 *
 * <p>A single top-level class on purpose (no inner, anonymous or enum-switch classes): it is
 * defined as one class file.
 */
public class ModelResponseDecoder extends ByteToMessageDecoder {

    /** A field is not complete yet: wait for more bytes. */
    private static final int UNDER_RUN = Integer.MIN_VALUE;

    private static final int END = -1;

    private final int maxBufferSize;

    public ModelResponseDecoder(int maxBufferSize) {
        this.maxBufferSize = maxBufferSize;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (in.readableBytes() < 9) {
            return;
        }
        in.markReaderIndex();
        ModelWorkerResponse resp = null;
        try {
            resp = decodeFrame(in);
        } finally {
            if (resp == null) {
                in.resetReaderIndex(); // incomplete (or corrupt: the exception goes on)
            }
        }
        if (resp != null) {
            out.add(resp);
        }
    }

    /** One complete reply, or null when the buffer does not hold all of it yet. */
    ModelWorkerResponse decodeFrame(ByteBuf in) {
        if (in.readableBytes() < 4) {
            return null;
        }
        ModelWorkerResponse resp = new ModelWorkerResponse();
        resp.setCode(in.readInt());
        String message = readString(in);
        if (message == null) {
            return null;
        }
        resp.setMessage(message);

        List<Predictions> predictions = new ArrayList<>();
        while (true) {
            int len = readLength(in);
            if (len == UNDER_RUN) {
                return null;
            }
            if (len == END) {
                break;
            }
            Predictions prediction = new Predictions();
            prediction.setRequestId(readString(in, len));

            String contentType = readString(in);
            if (contentType == null) {
                return null;
            }
            prediction.setContentType(contentType);

            if (in.readableBytes() < 4) {
                return null;
            }
            prediction.setStatusCode(in.readInt());

            String phrase = readString(in);
            if (phrase == null) {
                return null;
            }
            prediction.setReasonPhrase(phrase);

            int count = readLength(in);
            if (count == UNDER_RUN) {
                return null;
            }
            Map<String, String> headers = new HashMap<>();
            for (int i = 0; i < count; ++i) {
                String key = readString(in);
                if (key == null) {
                    return null;
                }
                String value = readString(in);
                if (value == null) {
                    return null;
                }
                headers.put(key, value);
            }
            prediction.setHeaders(headers);

            len = readLength(in);
            if (len == UNDER_RUN) {
                return null;
            }
            prediction.setResp(read(in, len));
            predictions.add(prediction);
        }
        resp.setPredictions(predictions);
        return resp;
    }

    /**
     * A length prefix: {@link #UNDER_RUN} when it, or the bytes it announces, are not all
     * there yet; above {@code maxBufferSize} the frame is corrupt (as in MMS).
     */
    private int readLength(ByteBuf in) {
        if (in.readableBytes() < 4) {
            return UNDER_RUN;
        }
        int len = in.readInt();
        if (len > maxBufferSize) {
            throw new CorruptedFrameException("Message size exceed limit: " + len);
        }
        if (len > in.readableBytes()) {
            return UNDER_RUN;
        }
        return len;
    }

    /** A length-prefixed UTF-8 string, or null when it is not all there yet. */
    private String readString(ByteBuf in) {
        int len = readLength(in);
        if (len == UNDER_RUN) {
            return null;
        }
        return readString(in, len);
    }

    private static String readString(ByteBuf in, int len) {
        return new String(read(in, len), StandardCharsets.UTF_8);
    }

    private static byte[] read(ByteBuf in, int len) {
        if (len < 0) {
            throw new CorruptedFrameException("Invalid message size: " + len);
        }
        byte[] buf = new byte[len];
        in.readBytes(buf);
        return buf;
    }
}
