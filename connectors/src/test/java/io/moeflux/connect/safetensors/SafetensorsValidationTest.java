package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.InvalidCheckpointException;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Every way a safetensors file or folder can be malformed is refused, naming the file and tensor. */
class SafetensorsValidationTest {
    @TempDir
    Path tmp;

    static byte[] file(String json, int dataBytes) {
        return file(json.getBytes(StandardCharsets.UTF_8), dataBytes);
    }

    static byte[] file(byte[] header, int dataBytes) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).array());
        out.writeBytes(header);
        out.writeBytes(new byte[dataBytes]);
        return out.toByteArray();
    }

    Path write(String name, byte[] bytes) throws Exception {
        Path p = tmp.resolve(name);
        Files.write(p, bytes);
        return p;
    }

    @Test
    void acceptsAWellFormedFile() throws Exception {
        Path p = write("ok.safetensors", file("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[8,10]}}", 10));
        assertThat(SafetensorsSource.open(p).describe().block().tensors().orElseThrow()).hasSize(2);
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "unknown dtype | {\"a\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,2]}} | 2 | unknown dtype \"F7\"",
        "size mismatch | {\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}} | 4 | tensor a: F32[2] needs 8 bytes",
        "hole | {\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}} | 5 | (hole)",
        "overlap | {\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}} | 3 | (overlap)",
        "not from zero | {\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}} | 3 | tensor a starts at data offset 1",
        "trailing bytes | {\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}} | 3 | (trailing bytes)",
        "truncated data | {\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}} | 2 | (truncated)",
        "duplicate name | {\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}} | 2 | Duplicate field 'a'",
        "bad json | {\"a\": | 0 | not valid JSON",
        "not an object | [1,2] | 0 | does not start with '{'",
        "negative dim | {\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}} | 0 | not a list of non-negative integers",
        "missing offsets | {\"a\":{\"dtype\":\"U8\",\"shape\":[1]}} | 1 | data_offsets must be two integers",
        "reversed offsets | {\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}} | 1 | data_offsets [1, 0] are invalid",
        "metadata not strings | {\"__metadata__\":{\"x\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} | 1 | __metadata__ value",
        "overflowing shape | {\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}} | 1 | overflows",
    })
    void refusesAMalformedHeader(String caseName, String json, int dataBytes, String message) throws Exception {
        Path p = write("bad.safetensors", file(json, dataBytes));
        assertThatThrownBy(() -> SafetensorsSource.open(p))
                .isInstanceOf(InvalidCheckpointException.class)
                .hasMessageStartingWith(p.toString())
                .hasMessageContaining(message);
    }

    @Test
    void refusesAHeaderThatIsNotUtf8() throws Exception {
        Path p = write("bad.safetensors", file(new byte[] {'{', (byte) 0xC3, (byte) 0x28, '}'}, 0));
        assertThatThrownBy(() -> SafetensorsSource.open(p)).hasMessageContaining("not valid UTF-8");
    }

    @Test
    void refusesAHeaderLengthPastTheEndOfTheFile() throws Exception {
        byte[] b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1000).array();
        Path p = write("bad.safetensors", b);
        assertThatThrownBy(() -> SafetensorsSource.open(p)).hasMessageContaining("header length 1000 runs past the end");
    }

    @Test
    void refusesAHeaderOverTheHundredMegabyteLimitBeforeAllocatingIt() throws Exception {
        byte[] b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(100_000_001L).array();
        Path p = write("bad.safetensors", b);
        assertThatThrownBy(() -> SafetensorsSource.open(p)).isInstanceOf(InvalidCheckpointException.class)
                .hasMessageContaining("not a safetensors file, or one whose header is beyond the format's 100 MB limit");
    }

    @Test
    void refusesAFileShorterThanTheLengthPrefix() throws Exception {
        Path p = write("bad.safetensors", new byte[5]);
        assertThatThrownBy(() -> SafetensorsSource.open(p)).hasMessageContaining("shorter than the 8-byte header length");
    }

    @Test
    void refusesATensorInTwoShards() throws Exception {
        write("a.safetensors", file("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
        write("b.safetensors", file("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("tensor x also appears in");
    }

    @Test
    void refusesAnIndexThatDisagreesWithItsShards() throws Exception {
        write("a.safetensors", file("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
        write("b.safetensors", file("{\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
        write(ShardIndex.FILE_NAME, "{\"metadata\":{\"total_size\":2},\"weight_map\":{\"x\":\"b.safetensors\",\"y\":\"b.safetensors\"}}".getBytes());
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).isInstanceOf(InvalidCheckpointException.class)
                .hasMessageContaining("tensor x is indexed in b.safetensors but no shard holds it");
        write(ShardIndex.FILE_NAME, "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\",\"z\":\"b.safetensors\"}}".getBytes());
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("tensor z is indexed in b.safetensors but no shard holds it");
        write(ShardIndex.FILE_NAME, "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"c.safetensors\"}}".getBytes());
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("c.safetensors: missing shard");
        write(ShardIndex.FILE_NAME, "{\"metadata\":{\"total_size\":3},\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\"}}".getBytes());
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("total_size is 3");
        write(ShardIndex.FILE_NAME, "{\"weight_map\":{\"x\":\"../a.safetensors\"}}".getBytes());
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("points outside the folder");
    }

    @Test
    void refusesAFolderWithoutShards() {
        assertThatThrownBy(() -> SafetensorsSource.open(tmp)).hasMessageContaining("no *.safetensors files");
    }
}
