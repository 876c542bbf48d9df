"""Print the Markdown table of registered GaterNets: parameters, gates and MACs (docs/models.md embeds it).

Run: ``python -m tools.gen_model_table``.
"""
from __future__ import annotations

import gaternet_zoo
from gaternet_zoo.utils.macs import count_params, gaternet_macs


def main() -> None:
    print('| model | backbone | plugin | gater | input | params (M) | backbone / gater params (M) | gates | '
          'backbone MACs (M) | gater MACs (M) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name in gaternet_zoo.list_models():
        if name == 'gaternet':
            continue
        model = gaternet_zoo.create_model(name).eval()
        size = tuple(model.pretrained_cfg['input_size'])
        macs = gaternet_macs(model, size)
        print(f'| `{name}` | `{model.backbone_name}` | `{model.plugin_name}` | `{model.gater_name}` | '
              f'{size[1]}x{size[2]} | '
              f'{count_params(model) / 1e6:.2f} | {count_params(model.backbone) / 1e6:.2f} / '
              f'{count_params(model.gater) / 1e6:.2f} | {model.gate_size} | {macs["backbone"] / 1e6:.1f} | '
              f'{macs["gater"] / 1e6:.1f} |')


if __name__ == '__main__':
    main()
