package io.moeflux.cli;

import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** Results on stdout: one readable summary, or with {@code --json} one JSON document. */
final class Reports {
    private Reports() {}

    /** Differences listed in text mode before the rest is only counted; JSON lists them all. */
    private static final int LISTED_DIFFERENCES = 50;

    static void printSummary(PrintWriter out, Transfer.Summary summary, boolean json) {
        if (json) {
            JsonOutput.print(out, summary.json());
        } else {
            out.println(Human.printable(summary.line()));
            out.flush();
        }
    }

    static void printComparison(PrintWriter out, String a, String b, CheckpointComparison.Report report, boolean json) {
        if (json) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("a", a);
            m.put("b", b);
            m.put("identical", report.identical());
            m.put("tensors_a", report.tensorsA());
            m.put("tensors_b", report.tensorsB());
            m.put("equal_tensors", report.equalTensors());
            m.put("equal_bytes", report.equalBytes());
            List<Map<String, String>> diffs = report.differences().stream().map(d -> {
                Map<String, String> e = new LinkedHashMap<>();
                e.put("tensor", d.tensor());
                e.put("kind", d.kind().name().toLowerCase(Locale.ROOT).replace('_', '-'));
                e.put("detail", d.detail());
                return e;
            }).toList();
            m.put("differences", diffs);
            JsonOutput.print(out, m);
            return;
        }
        List<CheckpointComparison.Difference> diffs = report.differences();
        diffs.stream().limit(LISTED_DIFFERENCES).forEach(d -> out.println(Human.printable(d.toString())));
        if (diffs.size() > LISTED_DIFFERENCES) {
            out.println("... and " + Human.count(diffs.size() - LISTED_DIFFERENCES) + " more differences");
        }
        if (report.identical()) {
            out.println("identical: " + Human.count(report.equalTensors()) + " tensors, " + Human.count(report.equalBytes())
                    + " bytes (" + Human.bytes(report.equalBytes()) + ")");
        } else {
            out.println("different: " + Human.count(diffs.size()) + (diffs.size() == 1 ? " difference" : " differences")
                    + "; " + Human.count(report.equalTensors()) + " of " + Human.count(report.tensorsA())
                    + " tensors of A equal in B (" + Human.count(report.tensorsB()) + " tensors in B)");
        }
        out.flush();
    }
}
