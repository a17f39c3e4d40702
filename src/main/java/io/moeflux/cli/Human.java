package io.moeflux.cli;

import java.util.Locale;

/** Numbers as people read them: decimal units for bytes (as disks and Hugging Face count), short durations. */
final class Human {
    private Human() {}

    static String bytes(long n) {
        if (n < 1000) {
            return n + " B";
        }
        String[] units = {"kB", "MB", "GB", "TB", "PB"};
        double v = n;
        int u = -1;
        while (v >= 1000 && u < units.length - 1) {
            v /= 1000;
            u++;
        }
        return String.format(Locale.ROOT, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
    }

    /** GB/s for conversions at disk speed, MB/s or kB/s for small ones, so a rate is never shown as 0.00. */
    static String rate(double bytesPerSecond) {
        if (bytesPerSecond >= 1e9) {
            return String.format(Locale.ROOT, "%.2f GB/s", bytesPerSecond / 1e9);
        }
        if (bytesPerSecond >= 1e6) {
            return String.format(Locale.ROOT, "%.1f MB/s", bytesPerSecond / 1e6);
        }
        return String.format(Locale.ROOT, "%.1f kB/s", bytesPerSecond / 1e3);
    }

    /** {@code 1 tensor}, {@code 2 tensors}, {@code 1,024 files}. */
    static String count(long n, String noun) {
        return count(n) + " " + noun + (n == 1 ? "" : "s");
    }

    static String duration(double seconds) {
        if (seconds < 1) {
            return String.format(Locale.ROOT, "%.0f ms", seconds * 1000);
        }
        if (seconds < 120) {
            return String.format(Locale.ROOT, "%.1f s", seconds);
        }
        long s = Math.round(seconds);
        return s / 3600 > 0
                ? String.format(Locale.ROOT, "%dh%02dm", s / 3600, s / 60 % 60)
                : String.format(Locale.ROOT, "%dm%02ds", s / 60, s % 60);
    }

    static String count(long n) {
        return String.format(Locale.ROOT, "%,d", n);
    }

    /**
     * {@code text} safe to print on a terminal: tensor names and paths come from files, and a control
     * character in one (ESC, a newline, NUL, a bidirectional override) would otherwise drive the
     * terminal or forge lines of output. Each such character is written as an escape ({@code \e},
     * {@code \n}, {@code \x00}, {@code \u202e}); everything else, backslashes included (regular
     * expressions appear in messages), is printed as it is. JSON output escapes by its own rules.
     */
    static String printable(String text) {
        StringBuilder out = null;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            String escape = escapeOf(c);
            if (escape != null && out == null) {
                out = new StringBuilder(text.length() + 8).append(text, 0, i);
            }
            if (out != null) {
                if (escape != null) {
                    out.append(escape);
                } else {
                    out.append(c);
                }
            }
        }
        return out == null ? text : out.toString();
    }

    private static String escapeOf(char c) {
        return switch (c) {
            case '\n' -> "\\n";
            case '\r' -> "\\r";
            case '\t' -> "\\t";
            case 0x1b -> "\\e";
            default -> c < 0x20 || (c >= 0x7f && c < 0xa0) ? String.format(Locale.ROOT, "\\x%02x", (int) c)
                    : isFormatControl(c) ? String.format(Locale.ROOT, "\\u%04x", (int) c) : null;
        };
    }

    /** Invisible characters that reorder or hide text around them (bidirectional overrides and isolates, zero-width marks). */
    private static boolean isFormatControl(char c) {
        return (c >= 0x200b && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
    }
}
