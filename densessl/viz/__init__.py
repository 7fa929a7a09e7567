"""Pictures of what a pre-trained model learned and how it trained: the principal components of
any backbone's dense features (ResNet or ViT), prototype neighbours (SlotCon), the locations two
views' loss pairs (DenseCL, SlotCon, MGC), and the training curves of runs."""
