-- mrt.models: model builders, each taking an options table with at least
-- classes and in_channels (plus rng and device):
--
--    resnet, resnet18, resnet34, resnet50, resnet_small   (mrt.models.resnet)
--    wrn, wrn16                                            (mrt.models.wrn)
--    mlp                                                   (mrt.models.mlp)
--
-- Parameter names are torchvision's for the ResNets and those of the common
-- PyTorch WideResNet code for wrn, so published checkpoints load by name.

local M = {}

for _, name in ipairs({ 'mrt.models.resnet', 'mrt.models.wrn', 'mrt.models.mlp' }) do
   for k, v in pairs(require(name)) do
      M[k] = v
   end
end

return M
