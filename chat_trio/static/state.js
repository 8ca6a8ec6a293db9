// What the views share: who is signed in, the rooms, the open room; and the app's actions the
// views may trigger (set by app.js, so no view imports the app and no import cycle exists).

export const state = {
  user: null,
  rooms: new Map(), // id → room
  joined: new Set(), // ids of rooms I am a member of
  roomId: null, // the open room
  generation: 0, // bumps whenever the open room changes; stale async results are dropped
};

export const actions = {
  openRoom: null, // async (roomId) → opens the room, joining it first if need be
  signedOut: null, // (message) → forgets the session and shows the sign-in form
  received: null, // (message) → shows a committed timeline entry of the open room
  roomsChanged: null, // () → the room list was drawn again (unread badges keep up with it)
};
