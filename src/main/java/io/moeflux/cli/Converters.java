package io.moeflux.cli;

import io.moeflux.tensor.DType;
import java.time.Duration;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** picocli converters; a value they reject is a usage error (exit 2) with a message naming the value. */
final class Converters {
    private Converters() {}

    private static final Pattern SIZE = Pattern.compile("(\\d+(?:\\.\\d+)?)\\s*(?:([kmgtp])(i)?b?|b)?", Pattern.CASE_INSENSITIVE);

    /**
     * Parses a byte count the way Hugging Face's {@code max_shard_size} does: {@code 5GB} is 5 * 10^9,
     * {@code 1GiB} is 2^30, a plain number is bytes.
     */
    static long parseByteSize(String text) {
        Matcher m = SIZE.matcher(text.trim());
        if (!m.matches()) {
            throw new IllegalArgumentException("invalid size \"" + text
                    + "\": expected bytes or a number with a unit such as 500MB, 5GB or 1GiB");
        }
        int power = m.group(2) == null ? 0 : "KMGTP".indexOf(m.group(2).toUpperCase(Locale.ROOT)) + 1;
        double value = Double.parseDouble(m.group(1)) * Math.pow(m.group(3) != null ? 1024 : 1000, power);
        if (value < 1 || value >= Long.MAX_VALUE) {
            throw new IllegalArgumentException("size \"" + text + "\" is out of range");
        }
        return (long) value;
    }

    static final class ByteSize implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return parseByteSize(value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    /** As {@link ByteSize}, and {@code 0} too: for memory budgets, where none means "hold nothing". */
    static final class ByteSizeOrZero implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            return value.trim().equals("0") ? 0L : new ByteSize().convert(value);
        }
    }

    private static final Pattern DURATION = Pattern.compile("(\\d+)\\s*(ms|s|m|h)?", Pattern.CASE_INSENSITIVE);

    /** A positive duration: {@code 500ms}, {@code 30s}, {@code 2m}, {@code 1h}, or plain seconds. */
    static final class Timeout implements ITypeConverter<Duration> {
        @Override
        public Duration convert(String value) {
            Matcher m = DURATION.matcher(value.trim());
            long n = m.matches() && m.group(1).length() <= 9 ? Long.parseLong(m.group(1)) : 0;
            if (n <= 0) {
                throw new TypeConversionException("invalid duration \"" + value + "\": expected a positive number of seconds,"
                        + " or one with a unit such as 500ms, 30s, 2m or 1h");
            }
            String unit = m.group(2) == null ? "s" : m.group(2).toLowerCase(Locale.ROOT);
            return switch (unit) {
                case "ms" -> Duration.ofMillis(n);
                case "m" -> Duration.ofMinutes(n);
                case "h" -> Duration.ofHours(n);
                default -> Duration.ofSeconds(n);
            };
        }
    }

    /** A TCP port, {@code 0} (any free one) to 65535. */
    static final class Port implements ITypeConverter<Integer> {
        @Override
        public Integer convert(String value) {
            try {
                int port = Integer.parseInt(value.trim());
                if (port >= 0 && port <= 65535) {
                    return port;
                }
            } catch (NumberFormatException e) {
                // Reported below, with the value.
            }
            throw new TypeConversionException("invalid port \"" + value + "\": expected 0 (any free port) to 65535");
        }
    }

    /** A regular expression; the error names the problem and where, in one line. */
    static final class Regex implements ITypeConverter<Pattern> {
        @Override
        public Pattern convert(String value) {
            try {
                return Pattern.compile(value);
            } catch (PatternSyntaxException e) {
                throw new TypeConversionException("invalid regular expression \"" + value + "\": " + e.getDescription()
                        + (e.getIndex() >= 0 ? " at index " + e.getIndex() : ""));
            }
        }
    }

    /** {@code bf16}, {@code f16} or {@code f32}: the types from-hf can cast merged experts to. */
    static final class TargetDType implements ITypeConverter<DType> {
        @Override
        public DType convert(String value) {
            DType d;
            try {
                d = DType.parseLenient(value);
            } catch (IllegalArgumentException e) {
                d = null;
            }
            if (d != DType.BF16 && d != DType.F16 && d != DType.F32) {
                throw new TypeConversionException("invalid dtype \"" + value + "\": expected bf16, f16 or f32");
            }
            return d;
        }
    }
}
