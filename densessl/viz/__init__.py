"""Pictures of what a pre-trained model learned: prototype neighbours (SlotCon) and the principal
components of any backbone's dense features (ResNet or ViT)."""
