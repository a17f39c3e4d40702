package io.moeflux.hy3;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class Hy3KeysTest {
    @ParameterizedTest
    @CsvSource({
        "model.layers.1.mlp.expert_bias, model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.1.mlp.router.gate.weight, model.layers.1.mlp.gate.weight",
        "model.layers.1.mlp.shared_mlp.gate_proj.weight, model.layers.1.mlp.shared_experts.gate_proj.weight",
        "layers.3.mlp.shared_mlp.down_proj.weight, layers.3.mlp.shared_experts.down_proj.weight",
        "model.layers.0.mlp.gate_proj.weight, model.layers.0.mlp.gate_proj.weight",
        "model.layers.1.mlp.experts.0.gate_proj.weight, model.layers.1.mlp.experts.0.gate_proj.weight",
        "model.embed_tokens.weight, model.embed_tokens.weight",
        // Anchored at the end: a bias that is not last is untouched.
        "model.layers.1.mlp.expert_bias.extra, model.layers.1.mlp.expert_bias.extra",
    })
    void renamesOnDiskNamesToNativeNames(String hf, String nativeName) {
        assertThat(Hy3Keys.hfToNative(hf)).isEqualTo(nativeName);
    }

    @ParameterizedTest
    @CsvSource({
        "model.layers.1.mlp.gate.e_score_correction_bias, model.layers.1.mlp.expert_bias",
        "model.layers.1.mlp.gate.weight, model.layers.1.mlp.router.gate.weight",
        "model.layers.1.mlp.shared_experts.up_proj.weight, model.layers.1.mlp.shared_mlp.up_proj.weight",
        "model.layers.1.mlp.gate_proj.weight, model.layers.1.mlp.gate_proj.weight",
        "model.norm.weight, model.norm.weight",
        // The unanchored rule replaces every occurrence, as re.subn does.
        "a.mlp.shared_experts.b.mlp.shared_experts.c, a.mlp.shared_mlp.b.mlp.shared_mlp.c",
    })
    void renamesNativeNamesToOnDiskNames(String nativeName, String hf) {
        assertThat(Hy3Keys.nativeToHf(nativeName)).isEqualTo(hf);
    }

    @ParameterizedTest
    @CsvSource({
        "model.layers.79.mlp.expert_bias, false",
        "model.layers.80.eh_proj.weight, true",
        "layers.80.enorm.weight, true",
        "layers.79.enorm.weight, false",
        "model.layers.81.x, true",
        "model.layers.0080.x, true",
        "model.language_model.layers.80.x, false",
        "model.norm.weight, false",
        "lm_head.weight, false",
        "model.layers.99999999999999999999.x, true",
    })
    void classifiesMtpKeysAtTheNumHiddenLayersBoundary(String key, boolean mtp) {
        assertThat(Hy3Keys.isMtpKey(key, 80)).isEqualTo(mtp);
    }

    @ParameterizedTest
    @CsvSource({
        "model.layers.3.mlp.experts.17.gate_proj.weight, model., 3, 17, GATE",
        "layers.3.mlp.experts.0.down_proj.weight, '', 3, 0, DOWN",
        "model.language_model.layers.2.mlp.experts.5.up_proj.weight, model.language_model., 2, 5, UP",
        "language_model.layers.2.mlp.experts.5.up_proj.weight, language_model., 2, 5, UP",
    })
    void parsesPerExpertKeys(String key, String prefix, String layer, String expert, Hy3Keys.Projection p) {
        var k = Hy3Keys.parseExpertKey(key).orElseThrow();
        assertThat(k.prefix()).isEqualTo(prefix);
        assertThat(k.layer()).isEqualTo(layer);
        assertThat(k.expertDigits()).isEqualTo(expert);
        assertThat(k.projection()).isEqualTo(p);
    }

    @ParameterizedTest
    @CsvSource({
        "model.layers.3.mlp.experts.gate_and_up_projs",
        "model.layers.3.mlp.experts.17.gate_proj.weight_scale_inv",
        "model.layers.3.mlp.shared_experts.gate_proj.weight",
        "other.layers.3.mlp.experts.1.gate_proj.weight",
    })
    void leavesOtherKeysAlone(String key) {
        assertThat(Hy3Keys.parseExpertKey(key)).isEmpty();
    }
}
